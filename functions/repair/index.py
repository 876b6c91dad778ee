"""repair: residents report, follow and rate repairs; admins dispatch; repairmen finish them.

``my_list`` and ``detail`` show a resident the repairs they reported and, to the owner of a
house, every repair of it (``mine`` false: filed by family or a tenant; read-only, the contact
phone masked; ``cancel`` and ``rate`` stay the reporter's, ``FORBIDDEN`` to the owner).

A new repair is told to the admins of its community (inbox, and the staff app's ``repair_filed``
subscription message where they consented). ``my_list``, ``staff_list`` and ``assigned`` give
``counts`` by status (every status, whichever one the page shows) for the tabs. Images come
back as ``{file_id, url}`` with a short-lived display URL.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

from caiyun.domain import repairs
from caiyun.errors import ErrorCode
from caiyun.runtime import (
    Account,
    Action,
    Call,
    CloudFunction,
    Key,
    StaffRecord,
    admin_only,
    lazy_import,
    page_reply,
    signed_in,
    staff_role,
)

# The type checker reads the modules themselves; at run time they load on first use.
if TYPE_CHECKING:
    from caiyun.contract import common
    from caiyun.contract import repair as api
else:
    api = lazy_import("caiyun.contract.repair")
    common = lazy_import("caiyun.contract.common")

repairman_only = staff_role("repairman")


def categories(call: Call, req: common.Empty) -> api.CategoriesReply:
    return api.CategoriesReply.model_validate({"items": repairs.categories(call.services)})


def upload_url(call: Call, req: api.UploadUrl, account: Account) -> common.UploadUrlReply:
    target = repairs.upload_target(call.services, account, req.purpose, req.filename)
    return common.UploadUrlReply.model_validate(asdict(target))


def create(call: Call, req: api.Create, account: Account, once: Key | None) -> api.RepairDetail:
    created = repairs.create(
        call.services,
        account,
        house_id=req.house_id,
        category=req.category,
        description=req.description,
        contact_phone=req.contact_phone,
        images=req.images,
        once=once,
    )
    return api.RepairDetail.model_validate(created)


def my_list(call: Call, req: api.MyList, account: Account) -> api.RepairPage:
    items, total, counts = repairs.my_list(
        call.services, account, req.status, req.page, req.page_size
    )
    return page_reply(api.RepairPage, req, items, total, counts=counts)


def detail(call: Call, req: api.RepairRef, account: Account) -> api.RepairDetail:
    found = repairs.detail(call.services, account, req.repair_id)
    return api.RepairDetail.model_validate(found)


def cancel(call: Call, req: api.RepairRef, account: Account) -> api.RepairDetail:
    done = repairs.cancel(call.services, account, req.repair_id)
    return api.RepairDetail.model_validate(done)


def rate(call: Call, req: api.Rate, account: Account) -> api.RepairDetail:
    done = repairs.rate(call.services, account, req.repair_id, req.stars, req.comment)
    return api.RepairDetail.model_validate(done)


def staff_list(call: Call, req: api.StaffList, staff: StaffRecord) -> api.StaffRepairPage:
    items, total, counts = repairs.staff_list(
        call.services,
        staff,
        req.community_id,
        req.status,
        req.page,
        req.page_size,
    )
    return page_reply(api.StaffRepairPage, req, items, total, counts=counts)


def repairmen(call: Call, req: api.Repairmen, staff: StaffRecord) -> api.RepairmenReply:
    items = repairs.repairmen(call.services, staff, req.community_id)
    return api.RepairmenReply.model_validate({"community_id": req.community_id, "items": items})


def dispatch(call: Call, req: api.Dispatch, staff: StaffRecord) -> api.RepairDetail:
    done = repairs.dispatch(call.services, staff, req.repair_id, req.repairman_id)
    return api.RepairDetail.model_validate(done)


def assigned(call: Call, req: api.Assigned, staff: StaffRecord) -> api.StaffRepairPage:
    items, total, counts = repairs.assigned(
        call.services, staff, req.status, req.page, req.page_size
    )
    return page_reply(api.StaffRepairPage, req, items, total, counts=counts)


def complete(call: Call, req: api.Complete, staff: StaffRecord) -> api.RepairDetail:
    done = repairs.complete(call.services, staff, req.repair_id, req.photos, req.note)
    return api.RepairDetail.model_validate(done)


READ_ERRORS: tuple[ErrorCode, ...] = ("NOT_FOUND",)
MOVE_ERRORS: tuple[ErrorCode, ...] = ("NOT_FOUND", "CONFLICT")


def actions() -> dict[str, Action]:
    return {
        "categories": Action(signed_in, categories),
        "upload_url": Action(signed_in, upload_url, ("RATE_LIMITED",)),
        "create": Action(
            signed_in,
            create,
            ("HOUSE_NOT_BOUND", "FORBIDDEN", "NOT_FOUND", "CONFLICT", "RATE_LIMITED"),
            once="repair.create",
        ),
        "my_list": Action(signed_in, my_list),
        "detail": Action(signed_in, detail, READ_ERRORS),
        "cancel": Action(signed_in, cancel, ("FORBIDDEN", *MOVE_ERRORS)),
        "rate": Action(signed_in, rate, ("FORBIDDEN", *MOVE_ERRORS)),
        "staff_list": Action(admin_only, staff_list, ("FORBIDDEN",)),
        "repairmen": Action(admin_only, repairmen, ("FORBIDDEN", "NOT_FOUND")),
        "dispatch": Action(admin_only, dispatch, ("FORBIDDEN", *MOVE_ERRORS)),
        "assigned": Action(repairman_only, assigned),
        "complete": Action(repairman_only, complete, ("FORBIDDEN", *MOVE_ERRORS)),
    }


main_handler = CloudFunction("repair", actions)
