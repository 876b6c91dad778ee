"""Visitor registration (访客登记) and the signed pass a guard checks at the gate.

A pass is good for one entry of the whole party, from registration until the end of its visit
date (Asia/Shanghai): the first guard to verify it records the entry, and every later scan
answers ``used``, so a forwarded screenshot cannot let a second party in. The token names the
registration and its expiry and carries an HMAC under a key derived from the token secret for
this purpose alone, so it cannot be forged or altered, and a session token can never pass for
a visitor pass or the other way round.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import re
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from caiyun import labels
from caiyun.clock import SHANGHAI, business_date, end_of_business_day, iso
from caiyun.crypto import mask_phone
from caiyun.domain import (
    communities,
    create_limits,
    houses,
    idempotency,
    memberships,
    messaging,
    staff,
)
from caiyun.domain.lifecycles import PASS
from caiyun.errors import AppError
from caiyun.services import Services
from caiyun.stores import memberships as membership_store
from caiyun.stores import visitors as store
from caiyun.stores.accounts import Account
from caiyun.stores.staff import StaffRecord
from caiyun.stores.visitors import Visit

if TYPE_CHECKING:
    from caiyun.settings import Settings

PassStatus = Literal["valid", "used", "expired"]

_KEY_PURPOSE = b"caiyun/visitor-pass/v1"
# 128 bits of HMAC-SHA256 cannot be guessed, and a shorter token makes a QR code that scans
# more easily on a worn phone screen.
_TAG_BYTES = 16
_TOKEN = re.compile(r"([0-9a-f]{24})\.([0-9]{1,12})\.([A-Za-z0-9_-]{22})")
DAYS_AHEAD = 7
SHARE_PAGE = "/pages/visitor/pass"


def _key(settings: Settings) -> bytes:
    secret = settings.token_secret.get_secret_value().encode()
    return hmac.new(secret, _KEY_PURPOSE, hashlib.sha256).digest()


def _sign(settings: Settings, visitor_id: str, expires: int) -> str:
    body = f"{visitor_id}.{expires}"
    tag = hmac.new(_key(settings), body.encode(), hashlib.sha256).digest()[:_TAG_BYTES]
    return f"{body}.{base64.urlsafe_b64encode(tag).rstrip(b'=').decode()}"


def open_token(settings: Settings, token: str) -> str | None:
    """The visitor id a genuine pass token names, or None for a forged or altered one."""
    match = _TOKEN.fullmatch(token)
    if match is None:
        return None
    expected = _sign(settings, match.group(1), int(match.group(2)))
    if not hmac.compare_digest(expected.encode(), token.encode()):
        return None
    return match.group(1)


def qr_png_base64(text: str) -> str:
    """A QR code of ``text`` as a base64 PNG (the mini-program shows it as a data URL)."""
    # Imported here: qrcode is only needed by this action, and importing a function is cheap.
    import qrcode
    from qrcode.image.pure import PyPNGImage

    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=8, border=4)
    code.add_data(text)
    code.make(fit=True)
    buffer = io.BytesIO()
    code.make_image(image_factory=PyPNGImage).save(buffer)
    return base64.b64encode(buffer.getvalue()).decode()


def register(
    services: Services,
    account: Account,
    house_id: str,
    visitor: dict[str, Any],
    visit_date: str | None,
    once: idempotency.Key | None = None,
) -> dict[str, Any]:
    """Register a visitor (name, phone, count, plate) to one of the caller's houses.

    ``visit_date`` is today (the default) up to a week ahead, in Asia/Shanghai. Returns the
    pass: its token, a QR code of it, the share page path and when it stops working.
    """
    db = services.db
    _, house, community = memberships.require_member_house(db, account["_id"], house_id)
    today = business_date(services.clock.now())
    day = date.fromisoformat(visit_date) if visit_date else today
    if not today <= day <= today + timedelta(days=DAYS_AHEAD):
        raise AppError(
            "INVALID_ARGUMENT",
            f"来访日期须在今天起{DAYS_AHEAD}天内",
            {"fields": {"visit_date": "超出允许范围"}},
        )

    def make(record_id: str) -> dict[str, Any]:
        now = services.clock.now()
        valid_until = end_of_business_day(day)
        doc: Visit = {
            "_id": record_id,
            **houses.where(house, community),
            "host_id": account["_id"],
            "name": visitor["name"],
            "phone": visitor["phone"],
            "count": visitor["count"],
            "plate": visitor.get("plate"),
            "visit_date": day.isoformat(),
            "valid_until": valid_until,
            "status": "registered",
            "entry": None,
            "created_at": now,
        }
        doc = store.insert(db, doc)
        return {
            "visitor_id": doc["_id"],
            **_pass(services.settings, doc),
            "visit_date": doc["visit_date"],
            "valid_until": iso(doc["valid_until"]),
        }

    def limit() -> None:
        create_limits.take_daily(services, "visitors", account["_id"], house_id)

    return idempotency.once(services, once, make, limit=limit)


def _pass(settings: Settings, doc: Visit) -> dict[str, str]:
    """The pass of a registration: its token (the same every time it is made), a QR code of it
    and the page to share it with."""
    token = _sign(settings, doc["_id"], int(doc["valid_until"].timestamp()))
    return {
        "pass_token": token,
        "qr_png_base64": qr_png_base64(token),
        "share_path": f"{SHARE_PAGE}?token={quote(token, safe='')}",
    }


def _status(doc: Visit, now: datetime) -> PassStatus:
    if doc["status"] == "entered":
        return "used"
    return "expired" if now >= doc["valid_until"] else "valid"


def _named_status(doc: Visit, now: datetime) -> dict[str, str]:
    status = _status(doc, now)
    return {"status": status, "status_name": labels.name("pass_status", status)}


def _result(result: str, visitor: dict[str, Any] | None) -> dict[str, Any]:
    return {"result": result, "result_name": labels.name("pass_status", result), "visitor": visitor}


def _mask_plate(plate: str | None) -> str | None:
    # The shared page may be forwarded: enough of the plate to recognise, not to copy.
    if plate is None:
        return None
    return plate[:2] + "*" * (len(plate) - 4) + plate[-2:]


def _genuine(services: Services, token: str) -> Visit | None:
    visitor_id = open_token(services.settings, token)
    if visitor_id is None:
        return None
    return store.get(services.db, visitor_id)


def pass_view(services: Services, token: str) -> dict[str, Any]:
    """What anyone holding the token sees: the visit, the community and the house label.

    A forged or altered token answers NOT_FOUND. The plate is partly masked and nothing about
    the host (name, phone) is shown.
    """
    doc = _genuine(services, token)
    if doc is None:
        raise AppError("NOT_FOUND", "通行证无效")
    return {
        **_named_status(doc, services.clock.now()),
        "visitor_name": doc["name"],
        "count": doc["count"],
        "plate": _mask_plate(doc["plate"]),
        "visit_date": doc["visit_date"],
        "valid_until": iso(doc["valid_until"]),
        "community_name": communities.name_on(services.db, doc),
        "house_label": doc["house_label"],
    }


def _entered_at(doc: Visit) -> str | None:
    entry = doc.get("entry")
    return None if entry is None else iso(entry["at"])


def _gate_view(services: Services, doc: Visit) -> dict[str, Any]:
    return {
        "visitor_id": doc["_id"],
        "visitor_name": doc["name"],
        "count": doc["count"],
        "plate": doc["plate"],
        "visit_date": doc["visit_date"],
        "valid_until": iso(doc["valid_until"]),
        "community_name": communities.name_on(services.db, doc),
        "house_label": doc["house_label"],
        "entered_at": _entered_at(doc),
    }


def verify(services: Services, guard: StaffRecord, token: str) -> dict[str, Any]:
    """A guard or admin checks a pass at the gate: ``valid`` (entry recorded), ``used``,
    ``expired`` or ``forged``.

    Only staff of the pass's community may check it (FORBIDDEN otherwise, nothing recorded).
    The entry is a conditional update, so of two guards scanning one pass at once exactly one
    sees ``valid``.
    """
    visitor_id = open_token(services.settings, token)
    if visitor_id is None:
        return _result("forged", None)
    now = services.clock.now()
    # The guard's scope is part of the condition, so admitting a valid pass is this one write;
    # why a pass was not admitted is read only when it was not.
    entered = store.admit(
        services.db,
        visitor_id,
        expects={**staff.scope_query(guard), **PASS.expects("enter")},
        to=PASS.target("enter"),
        entry={"at": now, "by": guard["_id"], "by_name": guard.get("name")},
    )
    if entered is None:
        # Out of scope (nothing recorded), already used by another scan, or past its day.
        latest = store.get(services.db, visitor_id)
        if latest is None:
            return _result("forged", None)
        staff.require_scope(guard, latest["community_id"])
        return _result(_status(latest, now), _gate_view(services, latest))
    view = _gate_view(services, entered)
    _tell_host(services, entered, view["community_name"])
    return _result("valid", view)


def _tell_host(services: Services, doc: Visit, community_name: str) -> None:
    assert doc["entry"] is not None, "told only once the party is in"
    arrived = doc["entry"]["at"].astimezone(SHANGHAI)
    messaging.deliver(
        services,
        [doc["host_id"]],
        "visitor",
        title="访客已到达",
        body=f"{doc['name']}一行{doc['count']}人已于{arrived:%H:%M}进入{community_name}",
        page="/pages/visitor/history",
        # Keys of the 访客到访提醒 template: visitor, arrival time, house.
        push=messaging.Push(
            template="visitor",
            data={
                "name1": doc["name"],
                "time2": f"{arrived:%Y-%m-%d %H:%M}",
                "thing3": f"{community_name}{doc['house_label']}",
            },
        ),
        community_id=doc["community_id"],
    )


def _record(doc: Visit, now: datetime, viewer_id: str) -> dict[str, Any]:
    # The person who registered the visit sees the phone and plate they typed in; the owner of
    # the house, reading a visit family or a tenant registered, sees them masked.
    mine = doc["host_id"] == viewer_id
    return {
        "visitor_id": doc["_id"],
        "house_id": doc["house_id"],
        "house_label": doc["house_label"],
        "name": doc["name"],
        "phone": doc["phone"] if mine else mask_phone(doc["phone"]),
        "count": doc["count"],
        "plate": doc["plate"] if mine else _mask_plate(doc["plate"]),
        "visit_date": doc["visit_date"],
        "registered_at": iso(doc["created_at"]),
        **_named_status(doc, now),
        "entered_at": _entered_at(doc),
        "mine": mine,
    }


def history(
    services: Services, account: Account, page: int, page_size: int
) -> tuple[list[dict[str, Any]], int]:
    """A page of the caller's registrations (phone and plate in full), and of every visit to a
    house the caller owns (``mine`` false: registered by family or a tenant, phone and plate
    masked), newest first."""
    me = account["_id"]
    query = memberships.filed_or_owned(services.db, account, "host_id")
    docs, total = store.page(services.db, query, page, page_size)
    now = services.clock.now()
    return [_record(doc, now, me) for doc in docs], total


def detail(services: Services, account: Account, visitor_id: str) -> dict[str, Any]:
    """One registration, for the person who made it (with the pass to share again while it is
    valid) or the owner of its house (read-only: masked, no pass). NOT_FOUND for anyone else."""
    db, me = services.db, account["_id"]
    doc = store.get(db, visitor_id)
    if doc is None or (doc["host_id"] != me and not membership_store.owns(db, me, doc["house_id"])):
        raise AppError("NOT_FOUND", "访客记录不存在")
    now = services.clock.now()
    shown = {**_record(doc, now, me), "valid_until": iso(doc["valid_until"])}
    if shown["mine"] and shown["status"] == "valid":
        return {**shown, **_pass(services.settings, doc)}
    return {**shown, "pass_token": None, "qr_png_base64": None, "share_path": None}
