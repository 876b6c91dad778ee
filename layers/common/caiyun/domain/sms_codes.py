"""SMS verification codes: issued, delivered, verified once.

Rules: 6 digits from a secure generator, stored only as a keyed hash, valid for a few minutes,
single use, burnt after a few wrong tries, one resend a minute and a daily cap per phone.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from pymongo import DESCENDING, IndexModel, ReturnDocument

from caiyun.adapters.sms import SmsError, SmsRateLimited
from caiyun.clock import business_date, end_of_business_day
from caiyun.data.schema import declare
from caiyun.domain import rate_limits
from caiyun.errors import AppError
from caiyun.ids import new_id
from caiyun.services import Services

Purpose = Literal["login", "change_phone_old", "change_phone_new"]

SMS_CODES = declare(
    "sms_codes",
    IndexModel([("phone", 1), ("purpose", 1), ("created_at", DESCENDING)]),
    # Spent and expired codes are kept a day for audit, then removed by MongoDB's TTL monitor.
    IndexModel("expires_at", expireAfterSeconds=24 * 3600),
)


@dataclass(frozen=True)
class IssuedCode:
    """What the caller may know about a code just sent."""

    resend_after_s: int
    expires_in_s: int


def _hash(services: Services, phone: str, purpose: str, code: str) -> str:
    key = services.settings.code_hash_key.get_secret_value().encode()
    return hmac.new(key, f"{purpose}:{phone}:{code}".encode(), hashlib.sha256).hexdigest()


def issue(services: Services, phone: str, purpose: Purpose) -> IssuedCode:
    """Create a new code for ``phone`` and send it; earlier unused codes stop working."""
    db, settings, now = services.db, services.settings, services.clock.now()
    resend_key = f"sms-resend:{purpose}:{phone}"
    daily_key = f"sms-daily:{phone}:{business_date(now).isoformat()}"
    rate_limits.take_lease(db, resend_key, settings.sms_resend_s, now)
    rate_limits.count_hit(
        db, daily_key, settings.sms_daily_limit, end_of_business_day(business_date(now)), now
    )
    code = f"{secrets.randbelow(10**6):06d}"
    db[SMS_CODES].update_many(
        {"phone": phone, "purpose": purpose, "used": False}, {"$set": {"used": True}}
    )
    code_id = new_id()
    db[SMS_CODES].insert_one(
        {
            "_id": code_id,
            "phone": phone,
            "purpose": purpose,
            "code_hash": _hash(services, phone, purpose, code),
            "attempts": 0,
            "used": False,
            "created_at": now,
            "expires_at": now + timedelta(seconds=settings.sms_code_ttl_s),
        }
    )
    minutes = str(max(1, settings.sms_code_ttl_s // 60))
    try:
        services.sms.send(phone, "code", [code, minutes])
    except Exception as exc:
        # Nothing was delivered: the code must not work, and the caller may try again at once.
        db[SMS_CODES].update_one({"_id": code_id}, {"$set": {"used": True}})
        rate_limits.release_lease(db, resend_key)
        rate_limits.undo_hit(db, daily_key)
        if isinstance(exc, SmsRateLimited):
            raise AppError("RATE_LIMITED", "短信发送过于频繁，请稍后再试") from None
        if isinstance(exc, SmsError):
            raise AppError("UNAVAILABLE", "短信发送失败，请稍后重试") from None
        raise
    return IssuedCode(resend_after_s=settings.sms_resend_s, expires_in_s=settings.sms_code_ttl_s)


def check(services: Services, phone: str, purpose: Purpose, code: str) -> str:
    """Count one try against the live code for ``phone``; its id if ``code`` matches it.

    The code stays live until :func:`spend`. Every try, right or wrong, is counted atomically
    before comparing, so parallel guesses cannot exceed the allowance. CODE_INVALID otherwise.
    """
    db, settings, now = services.db, services.settings, services.clock.now()
    doc = db[SMS_CODES].find_one_and_update(
        {
            "phone": phone,
            "purpose": purpose,
            "used": False,
            "expires_at": {"$gt": now},
            "attempts": {"$lt": settings.sms_max_attempts},
        },
        {"$inc": {"attempts": 1}},
        sort=[("created_at", DESCENDING)],
        return_document=ReturnDocument.AFTER,
    )
    if doc is None or not hmac.compare_digest(
        doc["code_hash"], _hash(services, phone, purpose, code)
    ):
        raise AppError("CODE_INVALID")
    return doc["_id"]


def spend(services: Services, code_id: str) -> None:
    """Use up a checked code; CODE_INVALID if a parallel call spent it first."""
    spent = services.db[SMS_CODES].find_one_and_update(
        {"_id": code_id, "used": False},
        {"$set": {"used": True, "used_at": services.clock.now()}},
    )
    if spent is None:
        raise AppError("CODE_INVALID")


def verify(services: Services, phone: str, purpose: Purpose, code: str) -> None:
    """Spend the live code for ``phone`` if ``code`` matches it; CODE_INVALID otherwise."""
    spend(services, check(services, phone, purpose, code))
