"""bind_house: community and house pickers, owner binding, family and tenant members."""

from __future__ import annotations

from typing import TYPE_CHECKING

from caiyun.domain import communities, house_binding, houses
from caiyun.errors import ErrorCode
from caiyun.runtime import Account, Action, Call, CloudFunction, lazy_import, signed_in

# The type checker reads the modules themselves; at run time they load on first use.
if TYPE_CHECKING:
    from caiyun.contract import bind_house as api
    from caiyun.contract import common
else:
    api = lazy_import("caiyun.contract.bind_house")
    common = lazy_import("caiyun.contract.common")


def list_communities(call: Call, req: api.Communities) -> api.CommunitiesReply:
    found = communities.in_region(call.services.db, req.model_dump())
    return api.CommunitiesReply.model_validate({"items": found})


def house_tree(call: Call, req: api.HouseTree) -> api.HouseTreeReply:
    tree = houses.tree(call.services.db, req.community_id)
    return api.HouseTreeReply.model_validate({"community_id": req.community_id, "buildings": tree})


def bind(call: Call, req: api.Bind, account: Account) -> api.MyHousesReply:
    items = house_binding.bind_owner(
        call.services,
        account,
        req.community_id,
        (req.building, req.unit, req.room),
        req.owner_name,
        req.owner_phone,
    )
    return api.MyHousesReply.model_validate({"items": items})


def my_houses(call: Call, req: common.Empty, account: Account) -> api.MyHousesReply:
    items = house_binding.my_houses(call.services, account)
    return api.MyHousesReply.model_validate({"items": items})


def members(call: Call, req: api.Members, account: Account) -> api.MembersReply:
    items = house_binding.members(call.services, account, req.house_id)
    return api.MembersReply.model_validate({"house_id": req.house_id, "items": items})


def add_member(call: Call, req: api.AddMember, account: Account) -> api.Member:
    added = house_binding.add_member(
        call.services, account, house_id=req.house_id, name=req.name, phone=req.phone, role=req.role
    )
    return api.Member.model_validate(added)


def remove_member(call: Call, req: api.RemoveMember, account: Account) -> api.RemoveMemberReply:
    house_binding.remove_member(call.services, account, req.house_id, req.account_id)
    return api.RemoveMemberReply(removed=True)


MANAGE_ERRORS: tuple[ErrorCode, ...] = ("NOT_FOUND", "FORBIDDEN")


def actions() -> dict[str, Action]:
    return {
        "communities": Action(signed_in, list_communities),
        "house_tree": Action(signed_in, house_tree, ("NOT_FOUND",)),
        "bind": Action(signed_in, bind, ("OWNER_MISMATCH", "NOT_FOUND", "RATE_LIMITED")),
        "my_houses": Action(signed_in, my_houses),
        "members": Action(signed_in, members, MANAGE_ERRORS),
        "add_member": Action(signed_in, add_member, (*MANAGE_ERRORS, "CONFLICT", "RATE_LIMITED")),
        "remove_member": Action(signed_in, remove_member, (*MANAGE_ERRORS, "CONFLICT")),
    }


main_handler = CloudFunction("bind_house", actions)
