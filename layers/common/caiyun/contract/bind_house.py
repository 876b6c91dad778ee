"""The bind_house function: pick a house, bind it as its owner, manage family and tenants."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import StrictStr, StringConstraints

from caiyun.contract.common import ObjectKey, Phone, Reply, Request

RegionPart = Annotated[StrictStr, StringConstraints(strip_whitespace=True, max_length=32)]
AddressPart = Annotated[
    StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=16)
]
PersonName = Annotated[
    StrictStr, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)
]


class Communities(Request):
    """Communities, optionally narrowed to a region."""

    province: RegionPart | None = None
    city: RegionPart | None = None
    district: RegionPart | None = None


class CommunityItem(Reply):
    """A community the binding picker offers, with its region and address."""

    community_id: str
    name: str
    province: str
    city: str
    district: str
    address: str


class CommunitiesReply(Reply):
    items: list[CommunityItem]


class HouseTree(Request):
    community_id: ObjectKey


class Room(Reply):
    room: str
    house_id: str


class Unit(Reply):
    unit: str
    rooms: list[Room]


class Building(Reply):
    building: str
    units: list[Unit]


class HouseTreeReply(Reply):
    community_id: str
    buildings: list[Building]


class Bind(Request):
    """Bind as owner: the details must match the property company's record."""

    community_id: ObjectKey
    building: AddressPart
    unit: AddressPart
    room: AddressPart
    owner_name: PersonName
    owner_phone: Phone


class MyHouse(Reply):
    """A house the caller is bound to, with the caller's role on it; the owner manages its
    members (``can_manage_members``)."""

    house_id: str
    community_id: str
    community_name: str
    label: str
    role: Literal["owner", "family", "tenant"]
    role_name: str
    can_manage_members: bool


class MyHousesReply(Reply):
    items: list[MyHouse]


class Members(Request):
    house_id: ObjectKey


class Member(Reply):
    """A person bound to the house; phones of people other than the caller are masked."""

    account_id: str
    name: str | None
    phone: str | None
    role: Literal["owner", "family", "tenant"]
    role_name: str
    is_me: bool


class MembersReply(Reply):
    house_id: str
    items: list[Member]


class AddMember(Request):
    house_id: ObjectKey
    name: PersonName
    phone: Phone
    role: Literal["family", "tenant"]


class RemoveMember(Request):
    house_id: ObjectKey
    account_id: ObjectKey


class RemoveMemberReply(Reply):
    removed: bool
