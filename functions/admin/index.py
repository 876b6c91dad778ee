"""admin: owner imports, staff management and the apps' configuration for property admins.

``update_config`` is for company-wide admins: it changes the agreements residents sign, the
repair categories and the complaint types for every community (both apps read them through
``login.config`` / ``login.staff_config``; a change reaches every running function within
``CAIYUN_CONFIG_CACHE_S`` seconds).
"""

from __future__ import annotations

import base64
from dataclasses import asdict
from typing import TYPE_CHECKING

from caiyun.domain import appconfig, overview, staff_management
from caiyun.runtime import (
    Action,
    Call,
    CloudFunction,
    StaffRecord,
    admin_only,
    lazy_import,
    page_reply,
)

# The type checker reads the modules themselves; at run time they load on first use.
if TYPE_CHECKING:
    from caiyun.contract import admin as api
    from caiyun.contract import common
    from caiyun.domain import bill_import, import_jobs, owner_import
else:
    api = lazy_import("caiyun.contract.admin")
    common = lazy_import("caiyun.contract.common")
    bill_import = lazy_import("caiyun.domain.bill_import")
    owner_import = lazy_import("caiyun.domain.owner_import")
    import_jobs = lazy_import("caiyun.domain.import_jobs")
# The import row models are pydantic models too: loaded when an import is served.


def import_owners(call: Call, req: api.ImportOwners, staff: StaffRecord) -> api.ImportOwnersReply:
    report = owner_import.import_owners(call.services, req.community, req.rows, importer=staff)
    return api.ImportOwnersReply.model_validate(
        {
            "community_id": report.community_id,
            "community_created": report.community_created,
            "counts": owner_import.count_statuses(report.rows),
            "rows": [owner_import.result_dict(r) for r in report.rows],
        }
    )


def import_bills(call: Call, req: api.ImportBills, staff: StaffRecord) -> api.ImportBillsReply:
    results = bill_import.import_bills(call.services, req.community_id, req.rows, importer=staff)
    return api.ImportBillsReply.model_validate(
        {
            "community_id": req.community_id,
            "counts": owner_import.count_statuses(results),
            "rows": [owner_import.result_dict(r) for r in results],
        }
    )


def import_upload_url(call: Call, req: api.ImportUploadUrl) -> common.UploadUrlReply:
    target = import_jobs.upload_target(call.services, call.require_account()["_id"], req.filename)
    return common.UploadUrlReply.model_validate(asdict(target))


def start_import(call: Call, req: api.StartImport, staff: StaffRecord) -> api.ImportJob:
    job = import_jobs.start(
        call.services,
        staff,
        req.kind,
        req.file_id,
        filename=req.filename or "",
        community_id=req.community_id,
        community=req.community,
        uploader=staff["_id"],
    )
    return api.ImportJob.model_validate(import_jobs.view(job))


def run_import(call: Call, req: api.ImportJobRef, staff: StaffRecord) -> api.ImportJob:
    job = import_jobs.run_chunk(call.services, staff, req.job_id)
    return api.ImportJob.model_validate(import_jobs.view(job))


def import_job(call: Call, req: api.ImportJobRef, staff: StaffRecord) -> api.ImportJob:
    job = import_jobs.get(call.services, staff, req.job_id)
    return api.ImportJob.model_validate(import_jobs.view(job))


def import_failed_rows(
    call: Call, req: api.ImportFailedRowsPage, staff: StaffRecord
) -> api.FailedRowsPage:
    job = import_jobs.get(call.services, staff, req.job_id)
    skip = (req.page - 1) * req.page_size
    rows, total = import_jobs.failed_rows(call.services, job, skip, req.page_size)
    return page_reply(api.FailedRowsPage, req, [import_jobs.row_view(r) for r in rows], total)


def import_failed_file(call: Call, req: api.ImportJobRef, staff: StaffRecord) -> api.FailedRowsFile:
    job = import_jobs.get(call.services, staff, req.job_id)
    content, rows = import_jobs.failed_rows_workbook(call.services, job)
    return api.FailedRowsFile(
        filename=f"导入失败的行-{job['_id']}.xlsx",
        content_type=import_jobs.SHEET_TYPES[".xlsx"],
        content_base64=base64.b64encode(content).decode(),
        rows=rows,
    )


def community_overview(call: Call, req: api.Overview, staff: StaffRecord) -> api.OverviewReply:
    found = overview.community_overview(call.services, staff, req.community_id)
    return api.OverviewReply.model_validate(found)


def add_staff(call: Call, req: api.AddStaff, staff: StaffRecord) -> api.StaffMember:
    added = staff_management.add_staff(
        call.services, staff, req.phone, req.name, req.role, req.community_ids
    )
    return api.StaffMember.model_validate(added)


def list_staff(call: Call, req: api.ListStaff, staff: StaffRecord) -> api.StaffPage:
    items, total = staff_management.list_staff(
        call.services, staff, req.role, req.page, req.page_size
    )
    return page_reply(api.StaffPage, req, items, total)


def remove_staff(call: Call, req: api.RemoveStaff, staff: StaffRecord) -> api.RemoveStaffReply:
    staff_management.remove_staff(call.services, staff, req.account_id)
    return api.RemoveStaffReply(removed=True)


def update_config(call: Call, req: api.UpdateConfig, staff: StaffRecord) -> api.ConfigReply:
    saved = appconfig.update(
        call.services,
        staff,
        req.model_dump(exclude={"revision"}, exclude_none=True),
        req.revision,
    )
    return api.ConfigReply.model_validate(appconfig.view(saved))


def actions() -> dict[str, Action]:
    return {
        "import_owners": Action(admin_only, import_owners, ("FORBIDDEN",)),
        "import_bills": Action(admin_only, import_bills, ("FORBIDDEN", "NOT_FOUND")),
        "import_upload_url": Action(admin_only, import_upload_url),
        "start_import": Action(admin_only, start_import, ("FORBIDDEN", "NOT_FOUND", "CONFLICT")),
        "run_import": Action(admin_only, run_import, ("NOT_FOUND",)),
        "import_job": Action(admin_only, import_job, ("NOT_FOUND",)),
        "import_failed_rows": Action(admin_only, import_failed_rows, ("NOT_FOUND",)),
        "import_failed_file": Action(admin_only, import_failed_file, ("NOT_FOUND",)),
        "overview": Action(admin_only, community_overview, ("FORBIDDEN", "NOT_FOUND")),
        "add_staff": Action(
            admin_only, add_staff, ("FORBIDDEN", "NOT_FOUND", "CONFLICT", "RATE_LIMITED")
        ),
        "list_staff": Action(admin_only, list_staff),
        "remove_staff": Action(admin_only, remove_staff, ("FORBIDDEN", "NOT_FOUND", "CONFLICT")),
        "update_config": Action(admin_only, update_config, ("FORBIDDEN", "CONFLICT")),
    }


main_handler = CloudFunction("admin", actions)
