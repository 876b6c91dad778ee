"""Accounts: one per phone number, with the WeChat openids and sessions bound to it.

The resident and the staff mini-program each have their own appid, so one WeChat user has a
different openid in each: an account binds one openid per app (``wx.<app>``) and keeps its
sessions per app (``sessions_by_app.<app>``), so signing in to one app never touches the other.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pymongo import IndexModel, ReturnDocument, UpdateMany, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from caiyun.data.inserts import insert_new
from caiyun.data.schema import declare
from caiyun.domain.memberships import MEMBERSHIPS, OWNED_JOINED
from caiyun.domain.messaging import follow_bind, follow_unbind
from caiyun.domain.staff import STAFF, STAFF_JOINED
from caiyun.ids import new_id
from caiyun.labels import App

# An openid belongs to one account at a time; each app (resident, staff) has its own openids.
ACCOUNTS = declare(
    "accounts",
    IndexModel("phone", unique=True),
    IndexModel(
        "wx.resident", unique=True, partialFilterExpression={"wx.resident": {"$type": "string"}}
    ),
    IndexModel("wx.staff", unique=True, partialFilterExpression={"wx.staff": {"$type": "string"}}),
    IndexModel([("autodebit.enabled", 1), ("_id", 1)]),
)

MAX_SESSIONS = 10


def by_id(db: Any, account_id: str) -> dict[str, Any] | None:
    """The account with this id."""
    return db[ACCOUNTS].find_one({"_id": account_id})


def by_phone(db: Any, phone: str) -> dict[str, Any] | None:
    """The account registered for this phone number."""
    return db[ACCOUNTS].find_one({"phone": phone})


Caller = tuple[dict[str, Any] | None, dict[str, Any] | None]


def _with_staff(db: Any, query: dict[str, Any], *joins: dict[str, Any]) -> dict[str, Any] | None:
    # One command for an account and, joined in, its staff record (and any further
    # ``$lookup``s), so a staff action does not spend a second round trip before its own work.
    rows = list(
        db[ACCOUNTS].aggregate(
            [
                {"$match": query},
                {"$limit": 1},
                {
                    "$lookup": {
                        "from": STAFF,
                        "localField": "_id",
                        "foreignField": "_id",
                        "as": "_staff",
                    }
                },
                *({"$lookup": join} for join in joins),
            ]
        )
    )
    if not rows:
        return None
    account = rows[0]
    joined = account.pop("_staff")
    # Kept on the account, so the domain's staff checks need no second read.
    account[STAFF_JOINED] = joined[0] if joined else None
    return account


def _caller(db: Any, query: dict[str, Any]) -> Caller:
    account = _with_staff(db, query)
    return (None, None) if account is None else (account, account[STAFF_JOINED])


def with_staff(db: Any, account_id: str) -> Caller:
    """The account with this id and its staff record, in one read."""
    return _caller(db, {"_id": account_id})


def with_autodebit_signed(db: Any, *, after: str, limit: int) -> list[dict[str, Any]]:
    """At most ``limit`` accounts with ids past ``after``, in id order, whose owner signed the
    auto-debit agreement and left it on."""
    found = db[ACCOUNTS].find(
        {
            # Only an agreement signed through autodebit.set_enabled carries signed_at: an
            # account switched on any other way is never charged.
            "autodebit.enabled": True,
            "autodebit.signed_at": {"$exists": True},
            "_id": {"$gt": after},
        }
    )
    return list(found.sort("_id", 1).limit(limit))


def repairmen_covering(db: Any, community_id: str) -> list[dict[str, Any]]:
    """The staff records of the repairmen who cover a community (its own and company-wide
    ones), each with ``account``: a list holding its account's phone (empty if the account is
    gone). One command."""
    return list(
        db[STAFF].aggregate(
            [
                {
                    "$match": {
                        "role": "repairman",
                        "$or": [{"community_ids": community_id}, {"all_communities": True}],
                    }
                },
                {
                    "$lookup": {
                        "from": ACCOUNTS,
                        "localField": "_id",
                        "foreignField": "_id",
                        "as": "account",
                    }
                },
                {"$project": {"name": 1, "community_ids": 1, "account.phone": 1}},
            ]
        )
    )


def _caller_in(db: Any, app: App, query: dict[str, Any]) -> Caller:
    # Staff rights come only through the staff app: in the resident app a staff member is a
    # resident like any other, so the staff record is not even read; the houses the resident
    # owns are joined in instead (their lists show what family and tenants filed there).
    if app == "staff":
        return _caller(db, query)
    # By the memberships' account index; an account holds a handful.
    links = {"from": MEMBERSHIPS, "localField": "_id", "foreignField": "account_id", "as": "_links"}
    rows = list(db[ACCOUNTS].aggregate([{"$match": query}, {"$limit": 1}, {"$lookup": links}]))
    if not rows:
        return None, None
    account = rows[0]
    account[OWNED_JOINED] = [m["house_id"] for m in account.pop("_links") if m["role"] == "owner"]
    account[STAFF_JOINED] = None
    return account, None


def caller_by_openid(db: Any, app: App, openid: str) -> Caller:
    """The account bound to this openid of ``app``, with its staff record in the staff app."""
    return _caller_in(db, app, {f"wx.{app}": openid})


def caller_with_session(db: Any, app: App, account_id: str, sid: str, now: datetime) -> Caller:
    """The account if ``sid`` is one of its live sessions in ``app``, with its staff record in
    the staff app."""
    return _caller_in(
        db,
        app,
        {
            "_id": account_id,
            f"sessions_by_app.{app}": {"$elemMatch": {"sid": sid, "expires_at": {"$gt": now}}},
        },
    )


def app_for_appid(settings: Any, appid: str | None) -> App:
    """Which of our mini-programs a platform appid is: the staff app only when it is the staff
    app's appid; any other caller (the resident appid, or none named) is the resident app."""
    staff_appid = settings.wechat_staff_appid
    return "staff" if staff_appid and appid == staff_appid else "resident"


def for_login(db: Any, phone: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The account for ``phone`` with its staff record joined in, and its house memberships
    (oldest first): everything a login checks and replies with, in one command."""
    account = _with_staff(
        db,
        {"phone": phone},
        {"from": MEMBERSHIPS, "localField": "_id", "foreignField": "account_id", "as": "_links"},
    )
    if account is None:
        return None, []
    return account, sorted(account.pop("_links"), key=lambda m: m["_id"])


def identity(account: dict[str, Any], avatar_url: str | None = None) -> dict[str, Any]:
    """Who the account is, as the account holder sees it (their own phone unmasked), with
    the display URL of its avatar."""
    return {
        "account_id": account["_id"],
        "phone": account["phone"],
        "name": account.get("name"),
        "nickname": account.get("nickname"),
        "avatar": account.get("avatar"),
        "avatar_url": avatar_url,
        "realname_verified": bool(account.get("realname_verified")),
    }


def _new_account(account_id: str, now: datetime, name: str | None) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "_id": account_id,
        "created_at": now,
        "nickname": None,
        "avatar": None,
        "last_login_at": None,
        "wx": {},
        "realname_verified": False,
    }
    if name:
        fields["name"] = name
    return fields


def ensure_named_accounts(db: Any, names: dict[str, str], now: datetime) -> dict[str, str]:
    """The account id of each phone in ``names``, created where missing, each named as
    ``names`` says (an owner import: the company's record is the authority on owners' names).

    At most three commands for any number of phones: one read, one unordered ``insert_many``,
    one ``bulk_write`` of the renames; a phone another import created meanwhile fails on the
    unique phone and is read again (a fourth).
    """
    if not names:
        return {}
    wanted = {"phone": 1, "name": 1}
    found = {a["phone"]: a for a in db[ACCOUNTS].find({"phone": {"$in": list(names)}}, wanted)}
    fresh = [{"phone": p, **_new_account(new_id(), now, names[p])} for p in names if p not in found]
    if fresh:
        taken = [fresh[i]["phone"] for i in insert_new(db[ACCOUNTS], fresh)]
        again = db[ACCOUNTS].find({"phone": {"$in": taken}}, wanted) if taken else []
        found.update({a["phone"]: a for a in fresh if a["phone"] not in taken})
        found.update({a["phone"]: a for a in again})
    renames = [
        UpdateOne({"_id": a["_id"]}, {"$set": {"name": names[p]}})
        for p, a in found.items()
        if a.get("name") != names[p]
    ]
    if renames:
        db[ACCOUNTS].bulk_write(renames, ordered=False)
    return {phone: account["_id"] for phone, account in found.items()}


def ensure_account(
    db: Any, phone: str, now: datetime, name: str | None = None
) -> tuple[dict[str, Any], bool]:
    """The account for ``phone``, created if missing; returns (account, created).

    Creation is an upsert on the unique phone, so two imports racing for one phone make one
    account.
    """
    account_id = new_id()
    fields = _new_account(account_id, now, name)
    for _ in range(2):
        try:
            account = db[ACCOUNTS].find_one_and_update(
                {"phone": phone},
                {"$setOnInsert": fields},
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
            return account, account["_id"] == account_id
        except DuplicateKeyError:
            continue
    raise RuntimeError("account upsert kept colliding")


def bind_openid(db: Any, account_id: str, app: App, openid: str) -> None:
    """Bind ``openid`` to this account, taking it from any account that held it before.

    Subscription consents follow: only those this openid gave this account stay spendable.
    """
    field = f"wx.{app}"
    # Consents first: dying between the two writes then leaves the openid's consents for its
    # previous account unspendable, never spendable for an account it has left.
    follow_bind(db, account_id, app, openid)
    for _ in range(3):
        try:
            # Ordered: the openid is freed from its old holder before this account takes it.
            db[ACCOUNTS].bulk_write(
                [
                    UpdateMany(
                        {field: openid, "_id": {"$ne": account_id}}, {"$unset": {field: ""}}
                    ),
                    UpdateOne({"_id": account_id}, {"$set": {field: openid}}),
                ],
                ordered=True,
            )
        except BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if not errors or any(e.get("code") != 11000 for e in errors):
                raise
            # Another login bound the same openid between our two writes; take it again.
            continue
        return
    raise RuntimeError("openid binding kept colliding")


def unbind_openid(db: Any, account: dict[str, Any], app: App, openid: str) -> None:
    """Unbind ``openid`` from this account's ``app`` if it is bound there (the other app's
    binding stays); its consents stop being spendable (they are kept for a later sign-in by
    the same WeChat user)."""
    if account.get("wx", {}).get(app) == openid:
        unbound = db[ACCOUNTS].update_one(
            {"_id": account["_id"], f"wx.{app}": openid}, {"$unset": {f"wx.{app}": ""}}
        )
        if unbound.modified_count:
            follow_unbind(db, account["_id"], openid)


def record_login(
    db: Any, account_id: str, app: App, sid: str, now: datetime, expires_at: datetime
) -> dict[str, Any]:
    """Add a session of ``app`` and stamp the login; returns the account as it was *before*
    this login. Each app keeps its newest ``MAX_SESSIONS``: signing in to one app again and
    again never pushes out the other app's sessions."""
    return db[ACCOUNTS].find_one_and_update(
        {"_id": account_id},
        {
            "$set": {"last_login_at": now},
            "$push": {
                f"sessions_by_app.{app}": {
                    "$each": [{"sid": sid, "created_at": now, "expires_at": expires_at}],
                    "$slice": -MAX_SESSIONS,
                }
            },
        },
        return_document=ReturnDocument.BEFORE,
    )


def end_session(db: Any, account_id: str, app: App, sid: str) -> None:
    """Revoke one session of this account in ``app``."""
    db[ACCOUNTS].update_one(
        {"_id": account_id}, {"$pull": {f"sessions_by_app.{app}": {"sid": sid}}}
    )
