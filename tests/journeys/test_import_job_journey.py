"""An import over HTTP as a deployed console runs it: the file PUT to its upload slot (larger
than any request body the functions take), then start_import and run_import until done."""

from __future__ import annotations

import requests
from sandbox_client import App, Running, login_by_api

from caiyun.runtime.events import MAX_BODY_BYTES

HEAD = "楼栋,单元,房号,账期,收费项目,金额（分）,缴费截止日,备注\n"
# 彩云花园's five demo houses, each billed for December; 备注 is a column the import ignores,
# long enough to make the file larger than a request body may be.
HOUSES = [(1, 1, 101), (1, 1, 102), (1, 2, 201), (2, 1, 301), (2, 1, 302)]


def test_a_file_larger_than_a_request_is_uploaded_then_imported_in_chunks(
    sandbox: Running,
) -> None:
    admin = App(sandbox.url, token=login_by_api(sandbox.url, "13900000002", "staff"))
    note = "备" * 70_000
    lines = [f"{b},{u},{r},2026-12,物业费,26800,2026-12-31,{note}" for b, u, r in HOUSES]
    lines.append(f"9,9,999,2026-12,物业费,26800,2026-12-31,{note}")  # no such house
    data = (HEAD + "\n".join(lines) + "\n").encode()
    assert len(data) > MAX_BODY_BYTES
    slot = admin.ok("admin", "import_upload_url", filename="十二月账单.csv")
    put = requests.put(slot["url"], data=data, headers=slot["headers"], timeout=10)
    assert put.status_code == 200
    community = admin.ok("login", "me")["staff"]["community_ids"][0]
    job = admin.ok(
        "admin", "start_import", kind="bills", file_id=slot["file_id"], community_id=community
    )
    assert (job["total_rows"], job["rows_done"], job["status"]) == (6, 0, "running")
    while job["status"] == "running":
        job = admin.ok("admin", "run_import", job_id=job["job_id"])
    assert job["counts"] == {"created": 5, "updated": 0, "unchanged": 0, "error": 1}
    failed = admin.ok("admin", "import_failed_rows", job_id=job["job_id"])
    assert [(r["line"], r["values"]["building"]) for r in failed["items"]] == [(7, "9")]
    # A tampered upload URL is refused, as COS refuses a bad signature.
    forged = slot["url"].replace("signature=", "signature=0")
    assert requests.put(forged, data=b"x", timeout=10).status_code == 403
