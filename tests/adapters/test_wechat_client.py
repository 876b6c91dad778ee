"""The WeChat client against the fake WeChat server, over real HTTP on loopback."""

from __future__ import annotations

import socket
import threading
import traceback
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from caiyun.adapters.storage import CloudBaseStorage
from caiyun.adapters.wechat import (
    WECHAT_TOKENS,
    WeChatClient,
    WeChatError,
    WeChatNoConsent,
    WeChatRateLimited,
    WeChatUnavailable,
    WxSession,
)
from caiyun.data.embedded import EmbeddedEngine
from caiyun.sandbox.fake_wechat import FakeWeChat
from caiyun.settings import Settings

RESIDENT_SECRET = "resident-secret-0123456789abcdef"
STAFF_SECRET = "staff-secret-0123456789abcdef"


class ManualClock:
    """A clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.moment = datetime(2025, 3, 1, 8, 0, tzinfo=timezone.utc)

    def now(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


def make_settings(base: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "wechat_api_base": base,
        "wechat_appid": "wxresident",
        "wechat_secret": RESIDENT_SECRET,
        "wechat_staff_appid": "wxstaff",
        "wechat_staff_secret": STAFF_SECRET,
        "wechat_timeout_s": 2.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def fake() -> Iterator[FakeWeChat]:
    with FakeWeChat(apps={"wxresident": RESIDENT_SECRET, "wxstaff": STAFF_SECRET}) as server:
        yield server


@pytest.fixture
def db(clock: ManualClock) -> Any:
    return EmbeddedEngine(None, clock=clock).database


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def client(fake: FakeWeChat, db: Any, clock: ManualClock) -> WeChatClient:
    return WeChatClient(make_settings(fake.url), db, clock)


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# code2session


def test_code2session_returns_openid_and_never_the_session_key(
    client: WeChatClient, fake: FakeWeChat
) -> None:
    session = client.code2session("resident", "code-1")

    assert session == WxSession(openid=FakeWeChat.openid_for("wxresident", "code-1"), unionid=None)
    assert not hasattr(session, "session_key")
    assert "session_key" not in repr(session)


def test_registered_code_logs_in_as_its_openid_and_unionid(
    client: WeChatClient, fake: FakeWeChat
) -> None:
    fake.register_code("known", "oResident42", unionid="uUnion42")

    assert client.code2session("resident", "known") == WxSession("oResident42", "uUnion42")


def test_staff_app_logs_in_with_its_own_appid(client: WeChatClient) -> None:
    resident = client.code2session("resident", "same-code")
    staff = client.code2session("staff", "same-code")

    assert staff.openid == FakeWeChat.openid_for("wxstaff", "same-code")
    assert staff.openid != resident.openid


def test_used_js_code_is_refused(client: WeChatClient) -> None:
    client.code2session("resident", "once")

    with pytest.raises(WeChatError) as refused:
        client.code2session("resident", "once")

    assert refused.value.errcode == 40163
    assert not refused.value.retryable
    assert not isinstance(refused.value, WeChatUnavailable)


def test_risky_user_is_refused_and_not_retryable(client: WeChatClient) -> None:
    with pytest.raises(WeChatError) as refused:
        client.code2session("resident", "risky")

    assert refused.value.errcode == 40226
    assert not refused.value.retryable


def test_rate_limit_raises_rate_limited(client: WeChatClient, fake: FakeWeChat) -> None:
    fake.fail_next(45011)

    with pytest.raises(WeChatRateLimited) as limited:
        client.code2session("resident", "code-2")

    assert limited.value.errcode == 45011


def test_unconfigured_staff_app_is_refused_without_calling_wechat(
    fake: FakeWeChat, db: Any, clock: ManualClock
) -> None:
    settings = make_settings(fake.url, wechat_staff_appid="", wechat_staff_secret="")
    client = WeChatClient(settings, db, clock)

    with pytest.raises(WeChatError, match="staff"):
        client.access_token("staff")
    assert fake.token_issues == 0


# access token


def test_access_token_is_cached_until_close_to_expiry(
    client: WeChatClient, fake: FakeWeChat, clock: ManualClock
) -> None:
    first = client.access_token("resident")
    clock.advance(7200 - 301)
    assert client.access_token("resident") == first
    assert fake.token_issues == 1

    clock.advance(2)  # now less than 300 s remain
    second = client.access_token("resident")

    assert second != first
    assert fake.token_issues == 2


def test_second_container_reuses_token_stored_in_database(
    fake: FakeWeChat, db: Any, clock: ManualClock
) -> None:
    first_container = WeChatClient(make_settings(fake.url), db, clock)
    second_container = WeChatClient(make_settings(fake.url), db, clock)

    token = first_container.access_token("resident")

    assert second_container.access_token("resident") == token
    assert fake.token_issues == 1
    stored = db[WECHAT_TOKENS].find_one({"_id": "wxresident"})
    assert stored["token"] == token
    assert stored["expires_at"] == clock.now() + timedelta(seconds=7200)


def test_token_near_expiry_in_database_is_refreshed_not_reused(
    fake: FakeWeChat, db: Any, clock: ManualClock
) -> None:
    db[WECHAT_TOKENS].insert_one(
        {"_id": "wxresident", "token": "old", "expires_at": clock.now() + timedelta(seconds=100)}
    )
    client = WeChatClient(make_settings(fake.url), db, clock)

    token = client.access_token("resident")

    assert token != "old"
    assert fake.token_issues == 1
    assert db[WECHAT_TOKENS].find_one({"_id": "wxresident"})["token"] == token


def test_each_app_has_its_own_token(client: WeChatClient, fake: FakeWeChat) -> None:
    assert client.access_token("resident") != client.access_token("staff")
    assert fake.token_issues == 2


def test_concurrent_callers_share_one_refresh(client: WeChatClient, fake: FakeWeChat) -> None:
    tokens: list[str] = []
    start = threading.Barrier(8)

    def fetch() -> None:
        start.wait()
        tokens.append(client.access_token("resident"))

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(tokens) == 8
    assert len(set(tokens)) == 1
    assert fake.token_issues == 1


# subscription messages


def test_send_subscribe_wraps_values_and_sends_as_the_app(
    client: WeChatClient, fake: FakeWeChat
) -> None:
    client.send_subscribe(
        "staff",
        "oStaff1",
        "tmpl-repair",
        "pages/orders/detail?id=7",
        {"thing1": "水管漏水", "time2": "2025-03-01 16:00"},
        state="trial",
    )

    assert fake.sent == [
        {
            "appid": "wxstaff",
            "touser": "oStaff1",
            "template_id": "tmpl-repair",
            "page": "pages/orders/detail?id=7",
            "data": {"thing1": {"value": "水管漏水"}, "time2": {"value": "2025-03-01 16:00"}},
            "miniprogram_state": "trial",
            "lang": "zh_CN",
        }
    ]


def test_expired_token_error_refreshes_once_and_retries(
    client: WeChatClient, fake: FakeWeChat, db: Any
) -> None:
    stale = client.access_token("resident")
    fake.revoke_tokens()

    client.send_subscribe("resident", "oRes1", "tmpl-bill", "pages/bills/index", {"thing1": "x"})

    assert len(fake.sent) == 1
    assert fake.token_issues == 2
    fresh = db[WECHAT_TOKENS].find_one({"_id": "wxresident"})["token"]
    assert fresh != stale
    assert client.access_token("resident") == fresh


def test_token_rejected_twice_gives_up_after_one_retry(
    client: WeChatClient, fake: FakeWeChat
) -> None:
    fake.fail_next(42001, endpoint="subscribe/send")
    fake.fail_next(42001, endpoint="subscribe/send")

    with pytest.raises(WeChatError) as refused:
        client.send_subscribe("resident", "oRes1", "tmpl-bill", "pages/bills/index", {})

    assert refused.value.errcode == 42001
    assert fake.sent == []
    assert fake.token_issues == 2  # the first token, and exactly one refresh


def test_no_consent_left_raises_no_consent(client: WeChatClient, fake: FakeWeChat) -> None:
    fake.consents[("oRes1", "tmpl-bill")] = 1
    client.send_subscribe("resident", "oRes1", "tmpl-bill", "pages/bills/index", {"thing1": "a"})

    with pytest.raises(WeChatNoConsent) as refused:
        client.send_subscribe(
            "resident", "oRes1", "tmpl-bill", "pages/bills/index", {"thing1": "b"}
        )

    assert refused.value.errcode == 43101
    assert not refused.value.retryable
    assert [message["data"]["thing1"]["value"] for message in fake.sent] == ["a"]


def test_bad_template_data_is_a_plain_refusal(client: WeChatClient, fake: FakeWeChat) -> None:
    fake.fail_next(47003, endpoint="subscribe/send")

    with pytest.raises(WeChatError) as refused:
        client.send_subscribe("resident", "oRes1", "tmpl-bill", "pages/bills/index", {})

    assert refused.value.errcode == 47003
    assert not isinstance(refused.value, WeChatNoConsent | WeChatUnavailable)
    assert fake.sent == []


# failures


def test_wechat_down_is_unavailable_and_retryable(db: Any, clock: ManualClock) -> None:
    client = WeChatClient(make_settings(closed_port_url()), db, clock)

    with pytest.raises(WeChatUnavailable) as down:
        client.code2session("resident", "code-3")
    assert down.value.retryable
    assert down.value.errcode is None

    with pytest.raises(WeChatUnavailable):
        client.send_subscribe("resident", "oRes1", "tmpl-bill", "pages/bills/index", {})


def test_system_busy_is_unavailable_and_retryable(client: WeChatClient, fake: FakeWeChat) -> None:
    fake.fail_next(-1)

    with pytest.raises(WeChatUnavailable) as busy:
        client.access_token("resident")

    assert busy.value.errcode == -1
    assert busy.value.retryable


def test_secret_never_appears_in_error_messages(
    fake: FakeWeChat, db: Any, clock: ManualClock
) -> None:
    wrong_secret = "wrong-secret-that-must-stay-hidden"
    js_code = "login-code-that-must-stay-hidden"
    failures: list[WeChatError] = []

    wrong = WeChatClient(make_settings(fake.url, wechat_secret=wrong_secret), db, clock)
    for call in (
        lambda: wrong.code2session("resident", js_code),
        lambda: wrong.access_token("resident"),
    ):
        with pytest.raises(WeChatError) as refused:
            call()
        assert refused.value.errcode == 40125
        failures.append(refused.value)

    down = WeChatClient(make_settings(closed_port_url(), wechat_secret=wrong_secret), db, clock)
    with pytest.raises(WeChatUnavailable) as unreachable:
        down.code2session("resident", js_code)
    failures.append(unreachable.value)

    for failure in failures:
        printed = "".join(traceback.format_exception(failure))
        assert wrong_secret not in printed
        assert js_code not in printed


def test_token_never_appears_in_error_messages(client: WeChatClient, fake: FakeWeChat) -> None:
    token = client.access_token("resident")
    fake.stop()

    with pytest.raises(WeChatUnavailable) as down:
        client.send_subscribe("resident", "oRes1", "tmpl-bill", "pages/bills/index", {})

    assert token not in "".join(traceback.format_exception(down.value))


# ------------------------------------------------------------------- CloudBase display URLs

CLOUD_ENV = "prod-4g2k7x"


def cloud_file(n: int) -> str:
    return f"cloud://{CLOUD_ENV}.7072-{CLOUD_ENV}-1250000000/repair/report/a/{n}.jpg"


@pytest.fixture
def cloudbase(fake: FakeWeChat, client: WeChatClient, clock: ManualClock) -> CloudBaseStorage:
    fake.cloud_envs[CLOUD_ENV] = "wxresident"
    return CloudBaseStorage(CLOUD_ENV, client, clock, ttl_s=3600)


def test_temp_urls_come_from_tcb_batchdownloadfile_fifty_ids_a_call(
    fake: FakeWeChat, cloudbase: CloudBaseStorage
) -> None:
    ids = [cloud_file(n) for n in range(60)]

    urls = cloudbase.display_urls([*ids, "https://thirdwx.qlogo.cn/a.png"])

    assert [len(call) for call in fake.download_calls] == [50, 10]
    assert all(urls[fid].startswith("https://7072-") for fid in ids)
    assert urls["https://thirdwx.qlogo.cn/a.png"] is None  # not this storage's


def test_a_temp_url_is_reused_for_half_its_life_then_asked_for_again(
    fake: FakeWeChat, cloudbase: CloudBaseStorage, clock: ManualClock
) -> None:
    first = cloudbase.display_urls([cloud_file(1)])
    clock.advance(1700)
    again = cloudbase.display_urls([cloud_file(1)])
    clock.advance(200)
    renewed = cloudbase.display_urls([cloud_file(1)])

    assert first == again and len(fake.download_calls) == 2
    assert renewed != first


def test_wechat_down_leaves_the_url_empty_not_the_reply_and_a_stale_token_is_renewed(
    fake: FakeWeChat, cloudbase: CloudBaseStorage
) -> None:
    fake.fail_next(-1, "batchdownloadfile")
    assert cloudbase.display_urls([cloud_file(1)]) == {cloud_file(1): None}
    assert cloudbase.display_urls([cloud_file(1)])[cloud_file(1)] is not None  # not kept empty
    fake.revoke_tokens()  # a stale token is replaced and the call made once more
    assert cloudbase.display_urls([cloud_file(3)])[cloud_file(3)] is not None


def test_the_fake_refuses_what_wechat_refuses(fake: FakeWeChat, client: WeChatClient) -> None:
    fake.cloud_envs[CLOUD_ENV] = "wxresident"
    with pytest.raises(WeChatError) as too_many:
        client.temp_file_urls(CLOUD_ENV, [cloud_file(n) for n in range(51)], 3600)
    with pytest.raises(WeChatError) as too_long:
        client.temp_file_urls(CLOUD_ENV, [cloud_file(1)], 86401)
    with pytest.raises(WeChatError) as no_env:
        client.temp_file_urls("someone-elses-env", [cloud_file(1)], 3600)
    assert (too_many.value.errcode, too_long.value.errcode, no_env.value.errcode) == (
        40097,
        40097,
        85088,
    )
    foreign = client.temp_file_urls(CLOUD_ENV, ["cloud://other-env.b/a.jpg"], 3600)
    assert foreign == {"cloud://other-env.b/a.jpg": None}
