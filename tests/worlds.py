"""Building blocks for the in-process tests' worlds: communities, owner rows, resident and staff
accounts, signing in through the login function, and reading the reply envelope.

Everything acts on the services the test's ``services`` fixture (conftest.py) installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from conftest import invoke

from caiyun.adapters.sms import sandbox_outbox
from caiyun.domain import accounts
from caiyun.labels import APPS
from caiyun.services import Services
from caiyun.stores import accounts as account_store
from caiyun.stores import memberships, staff

GARDEN = {"province": "广东省", "city": "深圳市", "district": "南山区", "name": "彩云花园"}
BAY = {"province": "广东省", "city": "广州市", "district": "天河区", "name": "星河湾"}
MAPLE = {"province": "广东省", "city": "深圳市", "district": "福田区", "name": "枫林苑"}


def ok(reply: dict[str, Any]) -> Any:
    """The data of a successful reply envelope."""
    assert reply["ok"] is True, reply
    return reply["data"]


def refused(reply: dict[str, Any]) -> str:
    """The error code of a refused reply envelope."""
    assert reply["ok"] is False, reply
    return reply["error"]["code"]


def account_of(db: Any, openid: str) -> dict[str, Any] | None:
    """The account an openid of either mini-program is bound to (a test's look-up: a call is
    resolved in one app only)."""
    return db[account_store.ACCOUNTS].find_one({"$or": [{f"wx.{app}": openid} for app in APPS]})


def owner_row(room: Any, name: str, phone: str, building: Any = 1, unit: Any = 1) -> dict[str, Any]:
    """One row of an owner import: the house and the owner on record."""
    return {
        "building": building,
        "unit": unit,
        "room": room,
        "owner_name": name,
        "owner_phone": phone,
    }


def resident_account(
    services: Services,
    phone: str,
    name: str | None,
    openid: str,
    homes: Sequence[dict[str, Any]] = (),
    role: memberships.ResidentRole = "owner",
    now: datetime | None = None,
) -> dict[str, Any]:
    """The account for ``phone``, a member of ``homes`` (added by itself) with the resident app
    bound to ``openid``."""
    db, now = services.db, now or services.clock.now()
    account, _ = account_store.ensure_account(db, phone, now, name)
    for house in homes:
        memberships.add(db, house, account["_id"], role, now, account["_id"])
    accounts.bind_openid(db, account["_id"], "resident", openid)
    return account


def staff_account(
    services: Services,
    phone: str,
    name: str,
    role: staff.StaffRole,
    community_ids: list[str] | None,
    openid: str | None = None,
    *,
    account_name: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The account for ``phone`` (named ``account_name``) made staff ``name`` with ``role`` in
    ``community_ids`` (None: every community), the staff app bound to ``openid`` if given."""
    db, now = services.db, now or services.clock.now()
    account, _ = account_store.ensure_account(db, phone, now, account_name)
    staff.upsert(db, account["_id"], name, role, community_ids, now)
    if openid is not None:
        accounts.bind_openid(db, account["_id"], "staff", openid)
    return account


@dataclass(frozen=True)
class Person:
    """Someone signed in through the login function to ``app``, with an openid of their own."""

    phone: str
    openid: str
    account_id: str
    token: str
    app: str = "resident"

    def call(self, function: str, action: str, **fields: Any) -> dict[str, Any]:
        return invoke(function, {"action": action, **fields}, self.openid, self.app)


P = TypeVar("P", bound=Person)


def log_in(services: Services, phone: str, app: str = "resident") -> tuple[str, dict[str, Any]]:
    """A real login of ``app`` as the openid ``o-<app>-<phone>``, with the code from the sandbox
    outbox; returns the openid and the login data."""
    openid = f"o-{app}-{phone}"
    ok(invoke("login", {"action": "send_code", "phone": phone}, openid, app))
    code = sandbox_outbox(services.db, phone)[0]["code"]
    data = ok(
        invoke("login", {"action": "login", "phone": phone, "code": code, "app": app}, openid, app)
    )
    return openid, data


def sign_in(
    services: Services,
    phone: str,
    app: str = "resident",
    person: type[P] = Person,
) -> P:
    """``log_in``, as a ``person`` (Person or a test's own kind of it)."""
    openid, data = log_in(services, phone, app)
    return person(phone, openid, data["account"]["account_id"], data["session_token"], app)


def make_staff(
    services: Services,
    phone: str,
    role: staff.StaffRole,
    community_ids: list[str] | None,
    name: str = "工作人员",
    person: type[P] = Person,
) -> P:
    """A staff member (account and staff record both ``name``), signed in to the staff app."""
    staff_account(services, phone, name, role, community_ids, account_name=name)
    return sign_in(services, phone, "staff", person)
