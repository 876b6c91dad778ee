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
from typing import Any, Literal

from pymongo import DESCENDING, IndexModel, InsertOne, ReturnDocument, UpdateMany

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


def issue(
    services: Services, phone: str, purpose: Purpose, caller_limit: rate_limits.Hits | None = None
) -> IssuedCode:
    """Create a new code for ``phone`` and send it; earlier unused codes stop working.

    ``caller_limit`` (the sender's own rate limit) is counted first, in the same command as the
    phone's resend lease and daily cap.
    """
    db, settings, now = services.db, services.settings, services.clock.now()
    day = business_date(now)
    resend_key = f"sms-resend:{purpose}:{phone}"
    daily_key = f"sms-daily:{phone}:{day.isoformat()}"
    rate_limits.take_all(
        db,
        [
            *([caller_limit] if caller_limit is not None else []),
            rate_limits.Lease(resend_key, settings.sms_resend_s),
            rate_limits.Hits(daily_key, settings.sms_daily_limit, end_of_business_day(day)),
        ],
        now,
    )
    code = f"{secrets.randbelow(10**6):06d}"
    code_id = new_id()
    # One ordered command: earlier unused codes are burnt before the new one exists.
    db[SMS_CODES].bulk_write(
        [
            UpdateMany(
                {"phone": phone, "purpose": purpose, "used": False}, {"$set": {"used": True}}
            ),
            InsertOne(
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
            ),
        ],
        ordered=True,
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


def _live(services: Services, phone: str, purpose: Purpose) -> dict[str, Any]:
    # The code that may still be tried: unused, unexpired, tries left.
    return {
        "phone": phone,
        "purpose": purpose,
        "used": False,
        "expires_at": {"$gt": services.clock.now()},
        "attempts": {"$lt": services.settings.sms_max_attempts},
    }


def check(services: Services, phone: str, purpose: Purpose, code: str) -> str:
    """Count one try against the live code for ``phone``; its id if ``code`` matches it.

    The code stays live until :func:`spend`. Every try, right or wrong, is counted atomically
    before comparing, so parallel guesses cannot exceed the allowance. CODE_INVALID otherwise.
    """
    doc = services.db[SMS_CODES].find_one_and_update(
        _live(services, phone, purpose),
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
    """Spend the live code for ``phone`` if ``code`` matches it; CODE_INVALID otherwise.

    The try is counted, compared and (on a match) spent in one atomic update, so parallel
    guesses cannot exceed the allowance and a code cannot be spent twice.
    """
    now = services.clock.now()
    matches = {"$eq": ["$code_hash", {"$literal": _hash(services, phone, purpose, code)}]}
    doc = services.db[SMS_CODES].find_one_and_update(
        _live(services, phone, purpose),
        [
            {
                "$set": {
                    "attempts": {"$add": ["$attempts", 1]},
                    "used": matches,
                    "used_at": {"$cond": [matches, now, "$$REMOVE"]},
                }
            }
        ],
        sort=[("created_at", DESCENDING)],
        return_document=ReturnDocument.AFTER,
    )
    if doc is None or not doc["used"]:
        raise AppError("CODE_INVALID")
