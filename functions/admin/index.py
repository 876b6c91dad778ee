"""admin: owner imports, staff management and the apps' configuration for property admins.

``update_config`` is for company-wide admins: it changes the agreements residents sign, the
repair categories and the complaint types for every community (both apps read them through
``login.config`` / ``login.staff_config``; a change reaches every running function within
``CAIYUN_CONFIG_CACHE_S`` seconds).
"""

from __future__ import annotations

from caiyun.domain import appconfig, staff_admin
from caiyun.runtime import Action, Call, CloudFunction, admin_only, lazy_import, page_reply

api = lazy_import("caiyun.contract.admin")
# The import row models are pydantic models too: loaded when an import is served.
bill_import = lazy_import("caiyun.domain.bill_import")
owner_import = lazy_import("caiyun.domain.owner_import")


def import_owners(call: Call, req: api.ImportOwners) -> api.ImportOwnersReply:
    report = owner_import.import_owners(
        call.services, req.community, req.rows, importer=call.require_staff("admin")
    )
    return api.ImportOwnersReply.model_validate(
        {
            "community_id": report.community_id,
            "community_created": report.community_created,
            "counts": owner_import.count_statuses(report.rows),
            "rows": [owner_import.result_dict(r) for r in report.rows],
        }
    )


def import_bills(call: Call, req: api.ImportBills) -> api.ImportBillsReply:
    results = bill_import.import_bills(
        call.services, req.community_id, req.rows, importer=call.require_staff("admin")
    )
    return api.ImportBillsReply.model_validate(
        {
            "community_id": req.community_id,
            "counts": owner_import.count_statuses(results),
            "rows": [owner_import.result_dict(r) for r in results],
        }
    )


def add_staff(call: Call, req: api.AddStaff) -> api.StaffMember:
    added = staff_admin.add_staff(
        call.services, call.require_staff("admin"), req.phone, req.name, req.role, req.community_ids
    )
    return api.StaffMember.model_validate(added)


def list_staff(call: Call, req: api.ListStaff) -> api.StaffPage:
    items, total = staff_admin.list_staff(
        call.services, call.require_staff("admin"), req.role, req.page, req.page_size
    )
    return page_reply(api.StaffPage, req, items, total)


def remove_staff(call: Call, req: api.RemoveStaff) -> api.RemoveStaffReply:
    staff_admin.remove_staff(call.services, call.require_staff("admin"), req.account_id)
    return api.RemoveStaffReply(removed=True)


def update_config(call: Call, req: api.UpdateConfig) -> api.ConfigReply:
    saved = appconfig.update(
        call.services,
        call.require_staff("admin"),
        req.model_dump(exclude={"revision"}, exclude_none=True),
        req.revision,
    )
    return api.ConfigReply.model_validate(appconfig.view(saved))


def actions() -> dict[str, Action]:
    return {
        "import_owners": Action(
            api.ImportOwners, admin_only, import_owners, api.ImportOwnersReply, ("FORBIDDEN",)
        ),
        "import_bills": Action(
            api.ImportBills,
            admin_only,
            import_bills,
            api.ImportBillsReply,
            ("FORBIDDEN", "NOT_FOUND"),
        ),
        "add_staff": Action(
            api.AddStaff,
            admin_only,
            add_staff,
            api.StaffMember,
            ("FORBIDDEN", "NOT_FOUND", "CONFLICT", "RATE_LIMITED"),
        ),
        "list_staff": Action(api.ListStaff, admin_only, list_staff, api.StaffPage),
        "remove_staff": Action(
            api.RemoveStaff,
            admin_only,
            remove_staff,
            api.RemoveStaffReply,
            ("FORBIDDEN", "NOT_FOUND", "CONFLICT"),
        ),
        "update_config": Action(
            api.UpdateConfig,
            admin_only,
            update_config,
            api.ConfigReply,
            ("FORBIDDEN", "CONFLICT"),
        ),
    }


main_handler = CloudFunction("admin", actions)
