"""The accounts collection (账号): one per phone number, with the WeChat openids and sessions
bound to it; its indexes, its reads (the caller's, with what the caller's checks need joined in)
and its writes.

The resident and the staff mini-program each have their own appid, so one WeChat user has a
different openid in each: an account binds one openid per app (``wx.<app>``) and keeps its
sessions per app (``sessions_by_app.<app>``), so signing in to one app never touches the other.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, TypedDict

from pymongo import IndexModel, ReturnDocument, UpdateMany, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError
from typing_extensions import NotRequired

from caiyun.data.inserts import insert_new
from caiyun.data.schema import declare
from caiyun.ids import new_id
from caiyun.labels import App
from caiyun.stores.memberships import MEMBERSHIPS, Membership
from caiyun.stores.staff import STAFF, StaffRecord

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


# The keys under which a caller's account carries what its lookup joined in: its staff record
# (staff app), the ids of the houses it owns (resident app).
STAFF_JOINED: Final = "_staff_record"
OWNED_JOINED: Final = "_owned_house_ids"


class Session(TypedDict):
    """One signed-in session of an app."""

    sid: str
    created_at: datetime
    expires_at: datetime


class RealName(TypedDict):
    """Who the bank verified the account holder to be: set once, by the first bank opening
    confirmed (``caiyun.domain.realname``)."""

    method: str
    serial: str
    name: str
    # Encrypted with the settings' field key (``crypto.encrypt``), as the card number is.
    id_number: str
    id_masked: str
    bank_phone: str
    verified_at: datetime


class Wallet(TypedDict):
    """The ICBC account that pays: an e-wallet, or a Class I card itself."""

    # Absent on accounts verified before the kind was kept (a Class I card or an e-wallet).
    kind: NotRequired[str]
    wallet_no: str | None
    wallet_class: str
    # The card debited when it is the account (encrypted); older card accounts kept it as
    # ``linked_card``.
    card_no: NotRequired[str | None]
    linked_card: NotRequired[str]
    linked_card_masked: str


class SignedAgreement(TypedDict):
    """An agreement the account holder accepted, at the version shown."""

    name: str
    version: str
    signed_at: datetime
    agreement_no: NotRequired[str]


class Autodebit(TypedDict):
    """The auto-debit switch and, once signed through ``caiyun.domain.autodebit``, the
    agreement with ICBC it relies on."""

    enabled: bool
    changed_at: datetime
    agreement_id: NotRequired[str]
    agreement_no: NotRequired[str]
    version: NotRequired[str]
    signed_at: NotRequired[datetime]
    limit_fen: NotRequired[int]
    end_date: NotRequired[str]
    # The bank has not yet confirmed a cancellation: the timer asks again.
    cancel_pending: NotRequired[bool]


class AutodebitDraft(TypedDict):
    """An auto-debit agreement sent to ICBC whose SMS code has not come back yet."""

    agreement_id: str
    send_no: str
    limit_fen: int
    end_date: str
    expires_at: datetime


class Account(TypedDict):
    """A person, keyed by a new id and unique by phone, with what the bank verified of them."""

    _id: str
    phone: str
    created_at: datetime
    nickname: str | None
    avatar: str | None
    last_login_at: datetime | None
    # App → the openid bound in it.
    wx: dict[str, str]
    realname_verified: bool
    name: NotRequired[str]
    sessions_by_app: NotRequired[dict[str, list[Session]]]
    profile_updated_at: NotRequired[datetime]
    phone_changed_at: NotRequired[datetime]
    realname: NotRequired[RealName]
    wallet: NotRequired[Wallet]
    agreements: NotRequired[list[SignedAgreement]]
    autodebit: NotRequired[Autodebit]
    autodebit_draft: NotRequired[AutodebitDraft]
    # Joined in by the caller's lookup, never stored.
    _staff_record: NotRequired[StaffRecord | None]
    _owned_house_ids: NotRequired[list[str]]


def by_id(db: Any, account_id: str) -> Account | None:
    """The account with this id."""
    return db[ACCOUNTS].find_one({"_id": account_id})


def by_phone(db: Any, phone: str) -> Account | None:
    """The account registered for this phone number."""
    return db[ACCOUNTS].find_one({"phone": phone})


def _with_staff(
    db: Any, query: dict[str, Any], *, links: bool = False
) -> tuple[Account | None, list[Membership]]:
    # One command for an account and, joined in, its staff record (and, with ``links``, its
    # memberships, oldest first), so a staff action does not spend a second round trip before
    # its own work.
    joins = [{"from": STAFF, "localField": "_id", "foreignField": "_id", "as": "_staff"}]
    if links:
        joins.append(
            {"from": MEMBERSHIPS, "localField": "_id", "foreignField": "account_id", "as": "_links"}
        )
    stages = [{"$match": query}, {"$limit": 1}, *({"$lookup": join} for join in joins)]
    rows = list(db[ACCOUNTS].aggregate(stages))
    if not rows:
        return None, []
    account = rows[0]
    joined = account.pop("_staff")
    # Kept on the account, so the domain's staff checks need no second read.
    account[STAFF_JOINED] = joined[0] if joined else None
    return account, sorted(account.pop("_links", []), key=lambda m: m["_id"])


def _with_owned(db: Any, query: dict[str, Any]) -> Account | None:
    # By the memberships' account index; an account holds a handful.
    links = {"from": MEMBERSHIPS, "localField": "_id", "foreignField": "account_id", "as": "_links"}
    rows = list(db[ACCOUNTS].aggregate([{"$match": query}, {"$limit": 1}, {"$lookup": links}]))
    if not rows:
        return None
    account = rows[0]
    account[OWNED_JOINED] = [m["house_id"] for m in account.pop("_links") if m["role"] == "owner"]
    account[STAFF_JOINED] = None
    return account


def _joined(db: Any, query: dict[str, Any], staff: bool) -> Account | None:
    return _with_staff(db, query)[0] if staff else _with_owned(db, query)


def with_staff(db: Any, account_id: str) -> Account | None:
    """The account with this id, its staff record joined in (``STAFF_JOINED``), in one read."""
    return _with_staff(db, {"_id": account_id})[0]


def by_openid(db: Any, app: App, openid: str, *, staff: bool) -> Account | None:
    """The account bound to this openid of ``app``, in one read, with its staff record joined
    in when ``staff``, else the ids of the houses it owns (``OWNED_JOINED``)."""
    return _joined(db, {f"wx.{app}": openid}, staff)


def with_live_session(
    db: Any, app: App, account_id: str, sid: str, now: datetime, *, staff: bool
) -> Account | None:
    """The account if ``sid`` is one of its live sessions in ``app``, joined as
    :func:`by_openid` joins it."""
    live = {"$elemMatch": {"sid": sid, "expires_at": {"$gt": now}}}
    return _joined(db, {"_id": account_id, f"sessions_by_app.{app}": live}, staff)


def for_login(db: Any, phone: str) -> tuple[Account | None, list[Membership]]:
    """The account for ``phone`` with its staff record joined in, and its house memberships
    (oldest first): everything a login checks and replies with, in one command."""
    return _with_staff(db, {"phone": phone}, links=True)


def with_autodebit_signed(db: Any, *, after: str, limit: int) -> list[Account]:
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


def _new_account(account_id: str, now: datetime, name: str | None) -> dict[str, Any]:
    # Every field but the phone: an upsert on the phone sets the rest on insert.
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
) -> tuple[Account, bool]:
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
    """Bind ``openid`` to this account's ``app``, taking it from any account that held it."""
    field = f"wx.{app}"
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


def unbind_openid(db: Any, account_id: str, app: App, openid: str) -> bool:
    """Unbind ``openid`` from this account's ``app`` if it is still bound there (the other
    app's binding stays); whether it was."""
    unbound = db[ACCOUNTS].update_one(
        {"_id": account_id, f"wx.{app}": openid}, {"$unset": {f"wx.{app}": ""}}
    )
    return bool(unbound.modified_count)


class PhoneTaken(Exception):
    """Another account holds the phone number (the unique phone index refused it)."""


def set_profile(db: Any, account_id: str, changes: dict[str, Any]) -> Account:
    """Set these profile fields; the account as it is after."""
    return db[ACCOUNTS].find_one_and_update(
        {"_id": account_id}, {"$set": changes}, return_document=ReturnDocument.AFTER
    )


def move_phone(db: Any, account_id: str, *, old: str, new: str, now: datetime) -> Account | None:
    """Move the account from phone ``old`` to ``new``; None, writing nothing, when its phone
    is no longer ``old`` (another change won); :class:`PhoneTaken` when another account holds
    ``new`` (the unique phone index decides a race)."""
    try:
        return db[ACCOUNTS].find_one_and_update(
            {"_id": account_id, "phone": old},
            {"$set": {"phone": new, "phone_changed_at": now}},
            return_document=ReturnDocument.AFTER,
        )
    except DuplicateKeyError:
        raise PhoneTaken(new) from None


def verify_realname(db: Any, account_id: str, fields: dict[str, Any]) -> Account | None:
    """Set the verified identity and its bank account (``fields``) unless the account is
    verified already; the account after, None when it was (the first identity stays)."""
    return db[ACCOUNTS].find_one_and_update(
        {"_id": account_id, "realname_verified": {"$ne": True}},
        {"$set": fields},
        return_document=ReturnDocument.AFTER,
    )


def holds_opening(db: Any, serial: str) -> bool:
    """Whether an account was verified through the bank opening with this serial."""
    return db[ACCOUNTS].count_documents({"realname.serial": serial}) > 0


def save_autodebit_draft(db: Any, account_id: str, draft: AutodebitDraft) -> None:
    """Keep the auto-debit agreement being signed until its SMS code comes back."""
    db[ACCOUNTS].update_one({"_id": account_id}, {"$set": {"autodebit_draft": draft}})


def sign_autodebit(
    db: Any, account_id: str, autodebit: Autodebit, agreement: SignedAgreement
) -> bool:
    """Turn auto-debit on with this signed agreement (kept among the account's agreements),
    dropping the draft, unless it is on already; whether it was turned on."""
    written = db[ACCOUNTS].update_one(
        {"_id": account_id, "autodebit.enabled": {"$ne": True}},
        {
            "$set": {"autodebit": autodebit},
            "$unset": {"autodebit_draft": ""},
            "$push": {"agreements": agreement},
        },
    )
    return bool(written.matched_count)


def replace_autodebit(
    db: Any, account_id: str, agreement_id: str | None, autodebit: Autodebit
) -> None:
    """Set the auto-debit state if it is still the one of agreement ``agreement_id``."""
    db[ACCOUNTS].update_one(
        {"_id": account_id, "autodebit.agreement_id": agreement_id},
        {"$set": {"autodebit": autodebit}},
    )


def mark_autodebit_cancel_pending(db: Any, account_id: str, agreement_id: str | None) -> None:
    """Note that the bank has not yet confirmed cancelling agreement ``agreement_id``."""
    db[ACCOUNTS].update_one(
        {"_id": account_id, "autodebit.agreement_id": agreement_id},
        {"$set": {"autodebit.cancel_pending": True}},
    )


def record_login(
    db: Any, account_id: str, app: App, sid: str, now: datetime, expires_at: datetime
) -> Account:
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
