"""Import jobs: an owner or bill file, uploaded to storage, imported a chunk per call.

A deployed function cannot take a 100,000-row file in one request (the body limit) nor import it
in one invocation (the platform's timeout). So the property office uploads the file to storage
first (``admin.import_upload_url``, the same upload slots as images), starts a job naming it
(``admin.start_import``), and then calls ``admin.run_import`` until the job is done. Each call
copies the file from storage to the function's temporary directory, streams past the rows
already done and imports the next chunk (at most ``CAIYUN_IMPORT_CHUNK_ROWS`` rows or
``CAIYUN_IMPORT_CHUNK_S`` seconds) through the imports' own entry points
(:func:`caiyun.domain.owner_import.import_owners`, :func:`caiyun.domain.bill_import.import_bills`).

A chunk moves the job's ``rows_done`` forward in one conditional update, so two callers racing
on one job never both count a chunk: a lease keeps a second caller out while a chunk runs, and
when a call dies mid-chunk the lease runs out and the next call redoes that chunk from the file,
which is safe because both imports are idempotent (a re-imported row changes nothing). The job
keeps its counts and every failed row (line, reason, values as read), from which the office
downloads the failed rows as ``.xlsx``, corrects them and imports that file again.
"""

from __future__ import annotations

import collections
import itertools
import tempfile
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from datetime import timedelta
from io import BytesIO
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument, UpdateOne
from pymongo.errors import DuplicateKeyError

from caiyun import labels
from caiyun.adapters.storage import SHEET_TYPES, UploadTarget
from caiyun.clock import iso
from caiyun.data.schema import declare
from caiyun.domain import bill_import, owner_import, staff
from caiyun.domain.owner_import import COLUMN_LABELS
from caiyun.errors import AppError
from caiyun.ids import new_id
from caiyun.imports.files import BILL_COLUMNS, OWNER_COLUMNS, read_rows
from caiyun.services import Services
from caiyun.stores.staff import StaffRecord

ImportKind = Literal["owners", "bills"]

# A job and its failed rows (owners' names and phones among them) are kept for KEEP_DAYS, long
# enough to correct and re-import, then the database drops them.
KEEP_DAYS = 30
IMPORT_JOBS = declare(
    "import_jobs",
    IndexModel([("community_id", ASCENDING), ("created_at", DESCENDING)]),
    IndexModel("expires_at", expireAfterSeconds=0),
    # One job per uploaded file: a start sent twice gets the first one's job.
    IndexModel("file_id", unique=True),
)
IMPORT_FAILED_ROWS = declare(
    "import_failed_rows",
    IndexModel([("job_id", ASCENDING), ("line", ASCENDING)], unique=True),
    IndexModel("expires_at", expireAfterSeconds=0),
)

_COLUMNS = {"owners": OWNER_COLUMNS, "bills": BILL_COLUMNS}
# A failed-rows file holds at most this many rows (a reply carries it): fix those, import them,
# and download the next ones.
MAX_FAILED_ROWS_FILE = 20000
# Beyond its chunk, a lease covers the copy of the file and the writes after the last row.
_LEASE_MARGIN_S = 60
_END = object()


def upload_target(services: Services, admin_id: str, filename: str) -> UploadTarget:
    """An upload slot for an import file (.xlsx or .csv) under the admin's own prefix."""
    return services.storage.upload_target(f"imports/{admin_id}", filename, SHEET_TYPES)


@contextmanager
def _local_copy(services: Services, file_id: str) -> Iterator[Path]:
    suffix = PurePosixPath(file_id).suffix.lower()
    with tempfile.TemporaryDirectory(prefix="caiyun-import-") as folder:
        path = Path(folder) / f"import{suffix}"
        try:
            services.storage.download(file_id, path)
        except FileNotFoundError:
            raise AppError(
                "INVALID_ARGUMENT",
                "文件尚未上传，请重新上传",
                {"fields": {"file_id": "文件不存在"}},
            ) from None
        yield path


def _open_rows(path: Path, kind: str) -> Generator[dict[str, Any], None, None]:
    try:
        return read_rows(path, _COLUMNS[kind], line_field="line")
    except ValueError as error:
        raise AppError(
            "INVALID_ARGUMENT", str(error), {"fields": {"file_id": str(error)}}
        ) from None


def start(
    services: Services,
    importer: StaffRecord | None,
    kind: ImportKind,
    file_id: str,
    *,
    filename: str = "",
    community_id: str | None = None,
    community: dict[str, Any] | None = None,
    uploader: str | None = None,
) -> dict[str, Any]:
    """A new job for an uploaded file: owners of ``community`` (its region and name, created
    if new) or bills of ``community_id``. ``importer`` is the admin's staff record (None for the
    operator's command line) and ``uploader`` the account whose upload the file must be.

    Checks the admin's scope through the import itself, and the file's header and row count
    now, so a wrong file fails here: INVALID_ARGUMENT (file not uploaded, wrong type, missing
    column), FORBIDDEN, NOT_FOUND (no such community). A file already started (the same start
    sent twice) gets its job back; started for another kind or community, CONFLICT.
    """
    services.storage.check_file_ids([file_id], "file_id", uploader)
    created = False
    if kind == "owners":
        report = owner_import.import_owners(services, community or {}, [], importer)
        community_id, created = report.community_id, report.community_created
    else:
        assert community_id is not None
        bill_import.import_bills(services, community_id, [], importer)
    started = _started(services, file_id, kind, community_id)
    if started is not None:
        return started
    with _local_copy(services, file_id) as path:
        rows = _open_rows(path, kind)
        total = sum(1 for _ in rows)
    now = services.clock.now()
    job = {
        "_id": new_id(),
        "kind": kind,
        "community_id": community_id,
        "community": community if kind == "owners" else None,
        "community_created": created,
        "file_id": file_id,
        "filename": filename or PurePosixPath(file_id).name,
        "status": "running",
        "total_rows": total,
        "rows_done": 0,
        "counts": dict.fromkeys(labels.LABELS["import_row_status"], 0),
        "lease_until": None,
        "created_by": importer["_id"] if importer else None,
        "created_at": now,
        "updated_at": now,
        "finished_at": None,
        "expires_at": now + timedelta(days=KEEP_DAYS),
    }
    if total == 0:
        job.update(status="done", finished_at=now)
    try:
        services.db[IMPORT_JOBS].insert_one(job)
    except DuplicateKeyError:
        # The same start, sent again while the first was reading the file.
        return _started(services, file_id, kind, community_id) or job
    return job


def _started(
    services: Services, file_id: str, kind: str, community_id: str | None
) -> dict[str, Any] | None:
    job = services.db[IMPORT_JOBS].find_one({"file_id": file_id})
    if job is not None and (job["kind"], job["community_id"]) != (kind, community_id):
        raise AppError("CONFLICT", "该文件已用于另一项导入，请重新上传")
    return job


def get(services: Services, importer: StaffRecord | None, job_id: str) -> dict[str, Any]:
    """The job, if it exists and its community is the admin's; else NOT_FOUND (an admin cannot
    tell other communities' jobs from none)."""
    job = services.db[IMPORT_JOBS].find_one({"_id": job_id})
    if job is None or (importer is not None and not staff.covers(importer, job["community_id"])):
        raise AppError("NOT_FOUND", "导入任务不存在")
    return job


def _take_lease(services: Services, job: dict[str, Any]) -> dict[str, Any] | None:
    now = services.clock.now()
    lease_s = services.settings.import_chunk_s + _LEASE_MARGIN_S
    return services.db[IMPORT_JOBS].find_one_and_update(
        {
            "_id": job["_id"],
            "status": "running",
            "rows_done": job["rows_done"],
            "$or": [{"lease_until": None}, {"lease_until": {"$lte": now}}],
        },
        {"$set": {"lease_until": now + timedelta(seconds=lease_s)}},
        return_document=ReturnDocument.AFTER,
    )


def run_chunk(services: Services, importer: StaffRecord | None, job_id: str) -> dict[str, Any]:
    """Import the job's next chunk and return the job as it now stands. A job that is done, or
    whose chunk another call is importing right now, is returned as it is."""
    job = get(services, importer, job_id)
    if job["status"] != "running":
        return job
    leased = _take_lease(services, job)
    if leased is None:
        return get(services, importer, job_id)
    try:
        return _import_chunk(services, importer, leased)
    except Exception:
        services.db[IMPORT_JOBS].update_one(
            {"_id": job_id, "lease_until": leased["lease_until"]}, {"$set": {"lease_until": None}}
        )
        raise


def _import_chunk(
    services: Services, importer: StaffRecord | None, job: dict[str, Any]
) -> dict[str, Any]:
    settings = services.settings
    deadline = time.monotonic() + settings.import_chunk_s
    taken: list[dict[str, Any]] = []
    with _local_copy(services, job["file_id"]) as path:
        rows = _open_rows(path, job["kind"])
        try:
            # Streams past the rows done by earlier chunks without keeping them.
            collections.deque(itertools.islice(rows, job["rows_done"]), maxlen=0)

            def chunk() -> Iterator[dict[str, Any]]:
                for row in rows:
                    taken.append(row)
                    yield {k: v for k, v in row.items() if k != "line"}
                    if len(taken) >= settings.import_chunk_rows or time.monotonic() >= deadline:
                        return

            results = _import(services, importer, job, chunk())
            finished = next(rows, _END) is _END
        finally:
            rows.close()
    failed = [
        UpdateOne(
            {"job_id": job["_id"], "line": taken[r.row - 1]["line"]},
            {
                "$set": {
                    "reason": r.reason,
                    "values": _values(taken[r.row - 1]),
                    "expires_at": job["expires_at"],
                }
            },
            upsert=True,
        )
        for r in results
        if r.status == "error"
    ]
    if failed:
        services.db[IMPORT_FAILED_ROWS].bulk_write(failed, ordered=False)
    counts = collections.Counter(r.status for r in results)
    now = services.clock.now()
    done: dict[str, Any] = {
        "rows_done": job["rows_done"] + len(taken),
        "lease_until": None,
        "updated_at": now,
    }
    if finished:
        done.update(status="done", finished_at=now)
    update: dict[str, Any] = {"$set": done}
    if counts:
        update["$inc"] = {f"counts.{status}": n for status, n in counts.items()}
    saved = services.db[IMPORT_JOBS].find_one_and_update(
        {"_id": job["_id"], "rows_done": job["rows_done"], "lease_until": job["lease_until"]},
        update,
        return_document=ReturnDocument.AFTER,
    )
    # None: this call's lease ran out and another call did the chunk (the same rows, the same
    # results, counted once by that call).
    return saved if saved is not None else get(services, importer, job["_id"])


def _import(
    services: Services,
    importer: StaffRecord | None,
    job: dict[str, Any],
    rows: Iterator[dict[str, Any]],
) -> list[Any]:
    if job["kind"] == "owners":
        return owner_import.import_owners(services, job["community"], rows, importer).rows
    return bill_import.import_bills(services, job["community_id"], rows, importer)


def _values(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "line"}


def failed_rows(
    services: Services, job: dict[str, Any], skip: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """A page of the job's failed rows in file order (line, reason, values), and their total."""
    query = {"job_id": job["_id"]}
    collection = services.db[IMPORT_FAILED_ROWS]
    items = list(collection.find(query).sort("line", ASCENDING).skip(skip).limit(limit))
    return items, collection.count_documents(query)


def failed_rows_workbook(services: Services, job: dict[str, Any]) -> tuple[bytes, int]:
    """The failed rows as an ``.xlsx`` in the import template's columns, each with its reason
    and its line in the original file (columns the import ignores), ready to correct and
    import again; and how many rows it holds (at most ``MAX_FAILED_ROWS_FILE``)."""
    from openpyxl import Workbook

    fields = list(_COLUMNS[job["kind"]])
    book = Workbook(write_only=True)
    sheet = book.create_sheet("导入失败的行")
    sheet.append([COLUMN_LABELS[f] for f in fields] + ["错误原因", "原行号"])
    rows, _ = failed_rows(services, job, 0, MAX_FAILED_ROWS_FILE)
    for row in rows:
        sheet.append([row["values"].get(f) for f in fields] + [row["reason"], row["line"]])
    out = BytesIO()
    book.save(out)
    return out.getvalue(), len(rows)


def view(job: dict[str, Any]) -> dict[str, Any]:
    """A job as the contract shows it."""
    return {
        "job_id": job["_id"],
        "kind": job["kind"],
        "kind_name": labels.name("import_kind", job["kind"]),
        "status": job["status"],
        "status_name": labels.name("import_job_status", job["status"]),
        "community_id": job["community_id"],
        "community_created": job["community_created"],
        "filename": job["filename"],
        "total_rows": job["total_rows"],
        "rows_done": job["rows_done"],
        "counts": job["counts"],
        "created_at": iso(job["created_at"]),
        "updated_at": iso(job["updated_at"]),
        "finished_at": iso(job["finished_at"]),
    }


def row_view(row: dict[str, Any]) -> dict[str, Any]:
    """A failed row as the contract shows it (values as text, as the file had them)."""
    return {
        "line": row["line"],
        "reason": row["reason"],
        "values": {k: str(v) for k, v in row["values"].items()},
    }
