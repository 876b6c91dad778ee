"""Import jobs (admin.start_import / run_import): a file from storage, imported a chunk per call,
resumable, with counts, failed rows and those rows as an .xlsx to correct and import again."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from conftest import fresh_services, make_settings
from worlds import Person, make_staff, ok, refused

from caiyun.cli import main
from caiyun.domain import import_jobs
from caiyun.services import Services

GARDEN = {"province": "广东省", "city": "深圳市", "district": "南山区", "name": "彩云花园"}
OWNER_HEAD = "楼栋,单元,房号,业主姓名,业主手机号\n"
OWNERS = [
    "1,1,101,张伟,13800000001",
    "1,1,102,李娜,13800000002",
    "1,1,103,王芳,1380000",  # a phone too short
    "2,1,201,刘洋,13800000004",
    "2,1,202,陈静,13800000005",
    "2,1,203,,13800000006",  # no owner name
    "3,1,301,赵敏,13800000007",
]


@pytest.fixture
def services() -> Iterator[Services]:
    """Chunks of three rows, so a seven-row file takes three calls."""
    yield from fresh_services(make_settings(import_chunk_rows=3))


@pytest.fixture
def admin(services: Services) -> Person:
    return make_staff(services, "13900000001", "admin", None, "周敏")


def upload(services: Services, admin: Person, name: str, data: bytes) -> str:
    """Upload as the console does: an upload slot from admin.import_upload_url, then the bytes."""
    slot = ok(admin.call("admin", "import_upload_url", filename=name))
    services.storage.put(slot["file_id"], data)  # type: ignore[attr-defined]
    return slot["file_id"]


def run_to_end(admin: Person, job: dict[str, Any]) -> list[dict[str, Any]]:
    seen = [job]
    while seen[-1]["status"] == "running":
        seen.append(ok(admin.call("admin", "run_import", job_id=job["job_id"])))
    return seen


def start_owners(services: Services, admin: Person, text: str) -> dict[str, Any]:
    file_id = upload(services, admin, "业主.csv", text.encode())
    return ok(admin.call("admin", "start_import", kind="owners", file_id=file_id, community=GARDEN))


def test_a_file_is_imported_a_chunk_per_call_with_progress_and_every_bad_row(
    services: Services, admin: Person
) -> None:
    job = start_owners(services, admin, OWNER_HEAD + "\n".join(OWNERS) + "\n")
    assert (job["status"], job["status_name"], job["total_rows"]) == ("running", "导入中", 7)
    seen = run_to_end(admin, job)
    assert [j["rows_done"] for j in seen] == [0, 3, 6, 7]
    done = seen[-1]
    assert (done["status_name"], done["kind_name"]) == ("已完成", "业主导入")
    assert done["counts"] == {"created": 5, "updated": 0, "unchanged": 0, "error": 2}
    assert services.db["houses"].count_documents({}) == 5
    page = ok(admin.call("admin", "import_failed_rows", job_id=job["job_id"]))
    assert page["total"] == 2
    assert [(r["line"], r["values"]["room"]) for r in page["items"]] == [(4, "103"), (7, "203")]
    assert "业主手机号" in page["items"][0]["reason"]
    assert "业主姓名" in page["items"][1]["reason"]
    # Asking again after the end changes nothing.
    again = ok(admin.call("admin", "run_import", job_id=job["job_id"]))
    assert again["counts"] == done["counts"] and again["rows_done"] == 7


def test_failed_rows_download_as_xlsx_that_imports_once_corrected(
    services: Services, admin: Person
) -> None:
    from openpyxl import Workbook, load_workbook

    job = run_to_end(admin, start_owners(services, admin, OWNER_HEAD + "\n".join(OWNERS)))[-1]
    file = ok(admin.call("admin", "import_failed_file", job_id=job["job_id"]))
    assert file["rows"] == 2 and file["filename"].endswith(".xlsx")
    sheet = load_workbook(BytesIO(base64.b64decode(file["content_base64"]))).active
    rows = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert rows[0] == ["楼栋", "单元", "房号", "业主姓名", "业主手机号", "错误原因", "原行号"]
    assert rows[1][:5] == ["1", "1", "103", "王芳", "1380000"] and rows[1][6] == 4
    # The office corrects the two rows in the downloaded file and imports it as it is.
    rows[1][4], rows[2][3] = "13800000003", "杨磊"
    fixed = Workbook()
    for row in rows:
        fixed.active.append(row)
    out = BytesIO()
    fixed.save(out)
    file_id = upload(services, admin, "改正.xlsx", out.getvalue())
    second = ok(
        admin.call("admin", "start_import", kind="owners", file_id=file_id, community=GARDEN)
    )
    done = run_to_end(admin, second)[-1]
    assert done["counts"] == {"created": 2, "updated": 0, "unchanged": 0, "error": 0}
    assert services.db["houses"].count_documents({}) == 7


def test_a_chunk_that_died_is_redone_once_its_lease_runs_out_and_counted_once(
    services: Services, admin: Person
) -> None:
    job = start_owners(services, admin, OWNER_HEAD + "\n".join(OWNERS))
    ok(admin.call("admin", "run_import", job_id=job["job_id"]))
    # A call that took the next chunk's lease and died before it finished.
    services.db[import_jobs.IMPORT_JOBS].update_one(
        {"_id": job["job_id"]},
        {"$set": {"lease_until": services.clock.now() + timedelta(seconds=60)}},
    )
    held = ok(admin.call("admin", "run_import", job_id=job["job_id"]))
    assert held["rows_done"] == 3  # someone else holds the chunk: nothing is done twice
    services.clock.advance(61)  # type: ignore[attr-defined]
    done = run_to_end(admin, ok(admin.call("admin", "run_import", job_id=job["job_id"])))[-1]
    assert done["rows_done"] == 7
    assert done["counts"] == {"created": 5, "updated": 0, "unchanged": 0, "error": 2}


def test_a_wrong_file_is_refused_at_start_and_no_job_is_made(
    services: Services, admin: Person
) -> None:
    no_phone = upload(
        services, admin, "业主.csv", "楼栋,单元,房号,业主姓名\n1,1,101,张伟\n".encode()
    )
    reply = admin.call("admin", "start_import", kind="owners", file_id=no_phone, community=GARDEN)
    assert refused(reply) == "INVALID_ARGUMENT"
    assert "缺少必需的列" in reply["error"]["message"]
    never_sent = ok(admin.call("admin", "import_upload_url", filename="账单.csv"))["file_id"]
    reply = admin.call("admin", "start_import", kind="owners", file_id=never_sent, community=GARDEN)
    assert reply["error"]["details"]["fields"] == {"file_id": "文件不存在"}
    someone_elses = no_phone.replace(admin.account_id, "a" * 24)
    reply = admin.call(
        "admin", "start_import", kind="owners", file_id=someone_elses, community=GARDEN
    )
    assert refused(reply) == "INVALID_ARGUMENT"
    reply = admin.call("admin", "import_upload_url", filename="账单.xls")
    assert reply["error"]["message"] == "仅支持 .xlsx 或 .csv 文件"
    assert services.db[import_jobs.IMPORT_JOBS].count_documents({}) == 0


def test_caiyun_import_runs_the_same_job_and_reports_bad_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    owners = tmp_path / "业主.csv"
    owners.write_text(OWNER_HEAD + "\n".join(OWNERS) + "\n", encoding="utf-8")
    data = str(tmp_path / "data")
    region = ["--province", "广东省", "--city", "深圳市", "--district", "南山区"]
    status = main(
        ["import", "owners", str(owners), *region, "--name", "彩云花园", "--data-dir", data]
    )
    out = capsys.readouterr().out
    assert status == 1
    assert "新增 5，更新 0，未变 0，错误 2" in out
    assert "第 4 行" in out and "第 7 行" in out
    bills = tmp_path / "账单.csv"
    bills.write_text(
        "楼栋,单元,房号,账期,收费项目,金额（分）,缴费截止日\n"
        "1,1,101,2026-12,物业费,26800,2026-12-31\n"
        "9,9,999,2026-12,物业费,26800,2026-12-31\n",
        encoding="utf-8",
    )
    status = main(["import", "bills", str(bills), "--community", "彩云花园", "--data-dir", data])
    out = capsys.readouterr().out
    assert status == 1
    assert "新增 1，更新 0，未变 0，错误 1" in out and "第 3 行" in out


def test_callers_racing_on_one_job_import_and_count_each_row_once(
    services: Services, admin: Person
) -> None:
    job_id = start_owners(services, admin, OWNER_HEAD + "\n".join(OWNERS))["job_id"]
    job: dict[str, Any] = {"status": "running"}
    with ThreadPoolExecutor(4) as pool:
        while job["status"] == "running":
            seen = list(pool.map(lambda _: import_jobs.run_chunk(services, None, job_id), range(4)))
            job = import_jobs.get(services, None, job_id)
            assert max(j["rows_done"] for j in seen) == job["rows_done"]
    assert job["counts"] == {"created": 5, "updated": 0, "unchanged": 0, "error": 2}
    assert services.db[import_jobs.IMPORT_FAILED_ROWS].count_documents({}) == 2
    assert services.db["houses"].count_documents({}) == 5


def test_a_job_and_its_failed_rows_are_dropped_after_the_days_kept(
    services: Services, admin: Person
) -> None:
    job = run_to_end(admin, start_owners(services, admin, OWNER_HEAD + "\n".join(OWNERS)))[-1]
    services.clock.advance((import_jobs.KEEP_DAYS + 1) * 86400)  # type: ignore[attr-defined]
    assert refused(admin.call("admin", "import_job", job_id=job["job_id"])) == "NOT_FOUND"
    assert services.db[import_jobs.IMPORT_FAILED_ROWS].count_documents({}) == 0


def test_a_start_sent_twice_gets_one_job_and_the_file_serves_no_other_import(
    services: Services, admin: Person
) -> None:
    file_id = upload(services, admin, "业主.csv", (OWNER_HEAD + OWNERS[0]).encode())
    start = {"kind": "owners", "file_id": file_id, "community": GARDEN}
    first = ok(admin.call("admin", "start_import", **start))
    again = ok(admin.call("admin", "start_import", **start))
    assert again["job_id"] == first["job_id"]
    other = {"kind": "bills", "file_id": file_id, "community_id": first["community_id"]}
    assert refused(admin.call("admin", "start_import", **other)) == "CONFLICT"
    assert services.db[import_jobs.IMPORT_JOBS].count_documents({}) == 1
