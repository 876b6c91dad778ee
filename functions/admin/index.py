"""admin: owner imports and staff management for property admins."""

from __future__ import annotations

from caiyun.contract import admin as api
from caiyun.domain import owner_import, staff_admin
from caiyun.runtime import Action, Call, CloudFunction, admin_only


def import_owners(call: Call, req: api.ImportOwners) -> api.ImportOwnersReply:
    report = owner_import.import_owners(
        call.services, req.community, req.rows, importer=call.require_staff("admin")
    )
    return api.ImportOwnersReply.model_validate(
        {
            "community_id": report.community_id,
            "community_created": report.community_created,
            "counts": report.counts(),
            "rows": list(owner_import.iter_results(report)),
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
    return api.StaffPage.model_validate(
        {"items": items, "total": total, "page": req.page, "page_size": req.page_size}
    )


def remove_staff(call: Call, req: api.RemoveStaff) -> api.RemoveStaffReply:
    staff_admin.remove_staff(call.services, call.require_staff("admin"), req.account_id)
    return api.RemoveStaffReply(removed=True)


main_handler = CloudFunction(
    "admin",
    {
        "import_owners": Action(
            api.ImportOwners, admin_only, import_owners, api.ImportOwnersReply, ("FORBIDDEN",)
        ),
        "add_staff": Action(
            api.AddStaff,
            admin_only,
            add_staff,
            api.StaffMember,
            ("FORBIDDEN", "NOT_FOUND", "CONFLICT"),
        ),
        "list_staff": Action(api.ListStaff, admin_only, list_staff, api.StaffPage),
        "remove_staff": Action(
            api.RemoveStaff,
            admin_only,
            remove_staff,
            api.RemoveStaffReply,
            ("FORBIDDEN", "NOT_FOUND", "CONFLICT"),
        ),
    },
)
