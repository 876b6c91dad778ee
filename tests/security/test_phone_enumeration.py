"""Issue 17.6: phones could be enumerated by asking ``login.check_account`` with a new openid
each time (25 of 25 succeeded): the limits were per openid and per IP only.

Now each queried phone is limited per hour and every caller together per minute, so a fresh
openid per ask no longer helps.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import fresh_services, invoke, make_settings

from caiyun.services import Services
from caiyun.stores import accounts

PER_PHONE = 3
GLOBAL = 10


@pytest.fixture
def services() -> Iterator[Services]:
    yield from fresh_services(
        make_settings(
            check_account_per_phone_per_hour=PER_PHONE, check_account_global_per_minute=GLOBAL
        )
    )


def _ask(phone: str, openid: str) -> dict:
    return invoke("login", {"action": "check_account", "phone": phone}, openid)


def test_one_phone_asked_from_a_new_openid_each_time_is_stopped_at_its_hourly_limit(
    services: Services,
) -> None:
    accounts.ensure_account(services.db, "13800000001", services.clock.now(), "张三")
    replies = [_ask("13800000001", f"o-probe-{n}") for n in range(25)]

    answered = [r for r in replies if r["ok"]]
    assert len(answered) == PER_PHONE and all(r["data"]["exists"] for r in answered)
    refusal = replies[PER_PHONE]["error"]
    assert refusal["code"] == "RATE_LIMITED" and refusal["details"] == {"retry_after_s": 3600}


def test_many_phones_asked_from_a_new_openid_each_time_are_stopped_by_the_global_rate(
    services: Services,
) -> None:
    accounts.ensure_account(services.db, "13800000007", services.clock.now(), "张三")
    replies = [_ask(f"1380000{n:04d}", f"o-probe-{n}") for n in range(25)]

    # 25 phones, a fresh openid each: only the first GLOBAL asks are answered this minute.
    assert sum(r["ok"] for r in replies) == GLOBAL
    assert {r["error"]["code"] for r in replies if not r["ok"]} == {"RATE_LIMITED"}
    services.clock.advance(60)
    assert _ask("13800000024", "o-probe-next")["ok"]
