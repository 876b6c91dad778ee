"""SMS verification codes, through the login function: the Foundation rules end to end.

6 secure digits delivered only by SMS, valid 5 minutes, single use, stored hashed, burnt after 5
wrong tries, one resend a minute, 10 a Shanghai day per phone, per-caller limits, and a provider
failure that leaves nothing usable behind.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import jwt
import pytest
from conftest import http, invoke, make_settings

from caiyun.adapters.sms import SmsRateLimited, sandbox_outbox
from caiyun.clock import SHANGHAI
from caiyun.services import Services, build_services, install_services
from caiyun.stores.accounts import ensure_account

PHONE = "13800001111"
OTHER_PHONE = "13900002222"
FREE_PHONE = "13700003333"
CHINESE = re.compile(r"[\u4e00-\u9fff]")


# ---------------------------------------------------------------------------- helpers


def new_account(services: Services, phone: str = PHONE, name: str = "张三") -> dict[str, Any]:
    account, _ = ensure_account(services.db, phone, services.clock.now(), name)
    return account


def send_code(phone: str, purpose: str = "login", openid: str | None = "o-sender") -> Any:
    return invoke(
        "login", {"action": "send_code", "phone": phone, "purpose": purpose}, openid=openid
    )


def login(phone: str, code: str, openid: str | None = "o-sender") -> Any:
    return invoke("login", {"action": "login", "phone": phone, "code": code}, openid=openid)


def outbox_codes(services: Services, phone: str) -> list[str]:
    """Codes the sandbox delivered to ``phone``, newest first."""
    return [m["code"] for m in sandbox_outbox(services.db, phone)]


def latest_code(services: Services, phone: str = PHONE) -> str:
    codes = outbox_codes(services, phone)
    assert codes, f"no SMS was delivered to {phone}"
    return codes[0]


def wrong(code: str, step: int = 1) -> str:
    """A well-formed code that is not ``code``."""
    return f"{(int(code) + step) % 10**6:06d}"


def error_code(reply: dict[str, Any]) -> str:
    return "OK" if reply["ok"] else reply["error"]["code"]


def to_start_of_minute(services: Services) -> None:
    """Move the clock just past a minute boundary so per-minute windows don't roll mid-test."""
    services.clock.advance(60 - services.clock.now().timestamp() % 60 + 0.05)


def to_shanghai_time(services: Services, hour: int, minute: int = 0) -> datetime:
    """Move the clock forward to the next Asia/Shanghai ``hour:minute``."""
    now = services.clock.now().astimezone(SHANGHAI)
    target = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if target <= now:
        target += timedelta(days=1)
    return services.clock.advance((target - now).total_seconds() + 0.05)


def values(doc: Any) -> Iterator[Any]:
    """Every leaf value of a document, nested dicts and lists included."""
    if isinstance(doc, dict):
        for value in doc.values():
            yield from values(value)
    elif isinstance(doc, list | tuple):
        for value in doc:
            yield from values(value)
    else:
        yield doc


def holds_code(value: Any, code: str) -> bool:
    if isinstance(value, int) and not isinstance(value, bool):
        return value == int(code)
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return isinstance(value, str) and re.search(rf"(?<!\d){code}(?!\d)", value) is not None


# ---------------------------------------------------------------------------- the code itself


def test_code_is_six_digits_delivered_by_sms_and_never_in_a_reply(services: Services) -> None:
    new_account(services)

    reply = send_code(PHONE)

    assert reply == {"ok": True, "data": {"resend_after_s": 60, "expires_in_s": 300}}
    [message] = sandbox_outbox(services.db, PHONE)
    code = message["code"]
    assert re.fullmatch(r"\d{6}", code)
    assert code in message["text"]

    signed_in = login(PHONE, code)
    assert signed_in["ok"], signed_in
    data = dict(signed_in["data"])
    token = data.pop("session_token")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert not any(holds_code(v, code) for v in values([data, claims]))


def test_code_is_not_in_the_http_reply_either(services: Services) -> None:
    new_account(services)

    status, body = http("login", {"action": "send_code", "phone": PHONE, "purpose": "login"})

    assert status == 200
    assert body == {"ok": True, "data": {"resend_after_s": 60, "expires_in_s": 300}}
    assert re.fullmatch(r"\d{6}", latest_code(services))


def test_codes_are_not_predictable_from_one_send_to_the_next(services: Services) -> None:
    phones = [f"1350000{i:04d}" for i in range(12)]
    for phone in phones:
        new_account(services, phone)
    codes = []
    for i, phone in enumerate(phones):
        assert send_code(phone, openid=f"o-sender-{i}")["ok"]
        codes.append(latest_code(services, phone))

    assert all(re.fullmatch(r"\d{6}", c) for c in codes)
    assert len(set(codes)) >= 10  # 12 draws from 10**6: repeats mean a broken generator


def test_code_is_valid_for_five_minutes(services: Services) -> None:
    new_account(services)
    send_code(PHONE)
    services.clock.advance(299)

    assert login(PHONE, latest_code(services))["ok"]


def test_code_is_refused_once_five_minutes_have_passed(services: Services) -> None:
    new_account(services)
    send_code(PHONE)
    code = latest_code(services)
    services.clock.advance(300)

    reply = login(PHONE, code)

    assert error_code(reply) == "CODE_INVALID"
    assert reply["error"]["message"] == "验证码错误或已过期"


def test_code_is_single_use(services: Services) -> None:
    new_account(services)
    send_code(PHONE)
    code = latest_code(services)

    assert login(PHONE, code, openid="o-first")["ok"]
    assert error_code(login(PHONE, code, openid="o-second")) == "CODE_INVALID"
    assert error_code(login(PHONE, code, openid="o-first")) == "CODE_INVALID"


def test_code_is_stored_only_as_a_keyed_hash(services: Services) -> None:
    new_account(services)
    send_code(PHONE)
    code = latest_code(services)

    docs = list(services.db["sms_codes"].find({}))

    assert docs, "the code must be kept somewhere to be verified"
    unkeyed = {
        hashlib.new(algorithm, text.encode()).hexdigest()
        for algorithm in ("md5", "sha1", "sha256")
        for text in (code, PHONE + code, code + PHONE, f"login:{PHONE}:{code}")
    }
    for doc in docs:
        for value in values(doc):
            assert not holds_code(value, code), f"plain code stored: {doc}"
            assert value not in unkeyed, "code stored under an unkeyed hash (brute-forceable)"
    assert login(PHONE, code)["ok"]  # and it still verifies


# ---------------------------------------------------------------------------- wrong tries


def test_right_code_still_works_after_four_wrong_tries(services: Services) -> None:
    new_account(services)
    send_code(PHONE)
    code = latest_code(services)

    for step in range(1, 5):
        assert error_code(login(PHONE, wrong(code, step))) == "CODE_INVALID"

    assert login(PHONE, code)["ok"]


def test_code_is_burnt_after_five_wrong_tries(services: Services) -> None:
    new_account(services)
    send_code(PHONE)
    code = latest_code(services)

    for step in range(1, 6):
        assert error_code(login(PHONE, wrong(code, step))) == "CODE_INVALID"

    assert error_code(login(PHONE, code)) == "CODE_INVALID"


def test_five_wrong_tries_burn_the_code_even_when_sent_in_parallel(services: Services) -> None:
    new_account(services)
    send_code(PHONE)
    code = latest_code(services)
    start = threading.Barrier(5)
    replies: list[Any] = []

    def guess(step: int) -> None:
        start.wait()
        replies.append(login(PHONE, wrong(code, step), openid=f"o-guesser-{step}"))

    threads = [threading.Thread(target=guess, args=(step,)) for step in range(1, 6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [error_code(r) for r in replies] == ["CODE_INVALID"] * 5
    assert error_code(login(PHONE, code)) == "CODE_INVALID"


def test_parallel_guessing_never_gets_more_than_five_tries(services: Services) -> None:
    new_account(services)
    send_code(PHONE)
    code = latest_code(services)
    start = threading.Barrier(20)
    replies: list[Any] = []

    def guess(step: int) -> None:
        start.wait()
        replies.append(login(PHONE, wrong(code, step), openid=f"o-guesser-{step}"))

    threads = [threading.Thread(target=guess, args=(step,)) for step in range(1, 21)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(replies) == 20
    assert all(error_code(r) == "CODE_INVALID" for r in replies)
    [doc] = services.db["sms_codes"].find({"phone": PHONE})
    assert doc["attempts"] <= 5
    assert error_code(login(PHONE, code)) == "CODE_INVALID"


# ---------------------------------------------------------------------------- resend and quotas


def test_resend_is_refused_for_sixty_seconds(services: Services) -> None:
    new_account(services)
    assert send_code(PHONE)["ok"]
    services.clock.advance(30)

    refused = send_code(PHONE)

    assert error_code(refused) == "RATE_LIMITED"
    assert CHINESE.search(refused["error"]["message"])
    assert 29 <= refused["error"]["details"]["retry_after_s"] <= 30
    services.clock.advance(29)
    assert send_code(PHONE)["error"]["details"]["retry_after_s"] == 1
    assert len(outbox_codes(services, PHONE)) == 1


def test_resend_is_allowed_after_sixty_seconds(services: Services) -> None:
    new_account(services)
    assert send_code(PHONE)["ok"]
    services.clock.advance(60)

    assert send_code(PHONE)["ok"]
    assert len(outbox_codes(services, PHONE)) == 2


def test_a_new_code_makes_the_previous_one_stop_working(services: Services) -> None:
    new_account(services)
    send_code(PHONE)
    first = latest_code(services)
    services.clock.advance(60)
    send_code(PHONE)
    second = latest_code(services)
    if first == second:  # one chance in a million; the rule cannot be told apart then
        pytest.skip("the two random codes happen to be equal")

    assert error_code(login(PHONE, first)) == "CODE_INVALID"
    assert login(PHONE, second)["ok"]


def test_at_most_ten_codes_per_phone_per_shanghai_day(services: Services) -> None:
    new_account(services)
    to_shanghai_time(services, 1)
    for i in range(10):
        if i:
            services.clock.advance(60)
        assert send_code(PHONE)["ok"], f"send {i + 1} of 10 refused"
    services.clock.advance(60)

    refused = send_code(PHONE, openid="o-someone-else")

    assert error_code(refused) == "RATE_LIMITED"
    # Until the next Shanghai midnight: about 22h50m from 01:11.
    assert 22 * 3600 < refused["error"]["details"]["retry_after_s"] <= 23 * 3600
    assert len(outbox_codes(services, PHONE)) == 10


def test_the_daily_quota_starts_again_on_the_next_shanghai_day(services: Services) -> None:
    new_account(services)
    to_shanghai_time(services, 23, 40)
    for i in range(10):
        if i:
            services.clock.advance(60)
        assert send_code(PHONE)["ok"], f"send {i + 1} of 10 refused"
    services.clock.advance(60)  # 23:50 Shanghai
    assert error_code(send_code(PHONE)) == "RATE_LIMITED"

    to_shanghai_time(services, 0)  # 16:00 UTC: a new business day, the same UTC date

    assert send_code(PHONE)["ok"]
    assert len(outbox_codes(services, PHONE)) == 11


def test_check_account_is_limited_to_twenty_a_minute_per_caller(services: Services) -> None:
    new_account(services)
    to_start_of_minute(services)
    phones = [PHONE] + [f"1360000{i:04d}" for i in range(20)]

    replies = [
        invoke("login", {"action": "check_account", "phone": p}, openid="o-curious") for p in phones
    ]

    assert all(r["ok"] for r in replies[:20])
    assert replies[0]["data"] == {"exists": True}
    assert replies[1]["data"] == {"exists": False}
    assert error_code(replies[20]) == "RATE_LIMITED"
    assert 1 <= replies[20]["error"]["details"]["retry_after_s"] <= 60
    other = invoke("login", {"action": "check_account", "phone": PHONE}, openid="o-other")
    assert other["ok"]
    services.clock.advance(60)
    again = invoke("login", {"action": "check_account", "phone": PHONE}, openid="o-curious")
    assert again["ok"]


def test_send_code_is_limited_to_five_a_minute_per_caller(services: Services) -> None:
    phones = [f"1380000{i:04d}" for i in range(6)]
    for phone in phones:
        new_account(services, phone)
    to_start_of_minute(services)

    replies = [send_code(phone, openid="o-bulk") for phone in phones]

    assert [error_code(r) for r in replies] == ["OK"] * 5 + ["RATE_LIMITED"]
    assert outbox_codes(services, phones[5]) == []
    assert send_code(phones[5], openid="o-other")["ok"]
    assert len(outbox_codes(services, phones[5])) == 1


def test_send_code_limit_per_caller_counts_refused_phones_too(services: Services) -> None:
    to_start_of_minute(services)
    replies = [send_code(f"1370000{i:04d}", openid="o-prober") for i in range(6)]

    assert [error_code(r) for r in replies] == ["ACCOUNT_NOT_FOUND"] * 5 + ["RATE_LIMITED"]


# ---------------------------------------------------------------------------- purposes


def test_unknown_phone_at_login_is_account_not_found_and_no_sms_is_sent(
    services: Services,
) -> None:
    reply = send_code(FREE_PHONE)

    assert error_code(reply) == "ACCOUNT_NOT_FOUND"
    assert reply["error"]["message"] == "该手机号未登记，请前往物业中心授权"
    assert sandbox_outbox(services.db, FREE_PHONE) == []
    assert services.db["sms_codes"].count_documents({"phone": FREE_PHONE}) == 0
    assert error_code(login(FREE_PHONE, "123456")) == "ACCOUNT_NOT_FOUND"


def _signed_in(services: Services, phone: str, openid: str) -> None:
    new_account(services, phone)
    assert send_code(phone, openid=openid)["ok"]
    assert login(phone, latest_code(services, phone), openid=openid)["ok"]


def test_change_phone_new_refuses_a_phone_already_in_use(services: Services) -> None:
    _signed_in(services, PHONE, "o-mover")
    new_account(services, OTHER_PHONE, "李四")

    reply = send_code(OTHER_PHONE, "change_phone_new", openid="o-mover")

    assert error_code(reply) == "CONFLICT"
    assert CHINESE.search(reply["error"]["message"])
    assert sandbox_outbox(services.db, OTHER_PHONE) == []
    assert send_code(FREE_PHONE, "change_phone_new", openid="o-mover")["ok"]
    assert len(outbox_codes(services, FREE_PHONE)) == 1


def test_change_phone_old_refuses_a_phone_that_is_not_the_callers(services: Services) -> None:
    _signed_in(services, PHONE, "o-mover")
    new_account(services, OTHER_PHONE, "李四")

    reply = send_code(OTHER_PHONE, "change_phone_old", openid="o-mover")

    assert error_code(reply) == "FORBIDDEN"
    assert sandbox_outbox(services.db, OTHER_PHONE) == []
    assert send_code(PHONE, "change_phone_old", openid="o-mover")["ok"]
    assert len(outbox_codes(services, PHONE)) == 2


def test_change_phone_codes_need_a_signed_in_caller(services: Services) -> None:
    new_account(services)

    old = send_code(PHONE, "change_phone_old", openid="o-nobody")
    new = send_code(FREE_PHONE, "change_phone_new", openid="o-nobody")

    assert error_code(old) == "UNAUTHENTICATED"
    assert error_code(new) == "UNAUTHENTICATED"
    assert sandbox_outbox(services.db, PHONE) == []
    assert sandbox_outbox(services.db, FREE_PHONE) == []


def test_a_change_phone_code_does_not_sign_in(services: Services) -> None:
    _signed_in(services, PHONE, "o-mover")
    services.clock.advance(60)
    assert send_code(PHONE, "change_phone_old", openid="o-mover")["ok"]

    assert error_code(login(PHONE, latest_code(services), openid="o-thief")) == "CODE_INVALID"


# ---------------------------------------------------------------------------- provider failures


def test_sms_provider_failure_is_unavailable_and_leaves_no_live_code(
    unreachable_sms: Services,
) -> None:
    services = unreachable_sms
    new_account(services)

    reply = send_code(PHONE)

    assert reply == {
        "ok": False,
        "error": {
            "code": "UNAVAILABLE",
            "message": reply["error"]["message"],
            "details": {"retryable": True},
        },
    }
    assert CHINESE.search(reply["error"]["message"])
    live = {"phone": PHONE, "used": False, "expires_at": {"$gt": services.clock.now()}}
    assert services.db["sms_codes"].count_documents(live) == 0


def test_sms_provider_failure_does_not_hold_the_sixty_second_resend(
    unreachable_sms: Services,
) -> None:
    new_account(unreachable_sms)
    assert error_code(send_code(PHONE)) == "UNAVAILABLE"

    retry = send_code(PHONE)

    assert error_code(retry) == "UNAVAILABLE"  # tried again, not refused by the 60 s rule


def test_sms_provider_failure_over_http_is_503(unreachable_sms: Services) -> None:
    new_account(unreachable_sms)

    status, body = http("login", {"action": "send_code", "phone": PHONE})

    assert status == 503
    assert body["error"]["code"] == "UNAVAILABLE"


def test_sms_provider_failures_do_not_use_up_the_daily_quota(
    unreachable_sms: Services,
) -> None:
    new_account(unreachable_sms)
    to_shanghai_time(unreachable_sms, 2)
    for i in range(12):
        assert error_code(send_code(PHONE, openid=f"o-retry-{i}")) == "UNAVAILABLE"
    working = build_services(
        make_settings(), clock=unreachable_sms.clock, db=unreachable_sms.db
    )  # the provider is back: same database and clock, sandbox SMS
    install_services(working)

    assert send_code(PHONE, openid="o-after")["ok"]
    assert len(outbox_codes(working, PHONE)) == 1


class _ProviderRateLimit:
    """An SMS adapter double: Tencent refusing with a frequency limit."""

    def send(self, phone: str, template: str, params: list[str]) -> None:
        raise SmsRateLimited("LimitExceeded.PhoneNumberOneHourLimit")


def test_provider_rate_limit_is_rate_limited_and_allows_retry_later(services: Services) -> None:
    new_account(services)
    sandbox_sms = services.sms
    services.sms = _ProviderRateLimit()

    reply = send_code(PHONE)

    assert error_code(reply) == "RATE_LIMITED"
    assert CHINESE.search(reply["error"]["message"])
    live = {"phone": PHONE, "used": False}
    assert services.db["sms_codes"].count_documents(live) == 0
    services.sms = sandbox_sms
    assert send_code(PHONE)["ok"]
