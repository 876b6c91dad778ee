"""The SMS adapters: the real Tencent SDK against a local API 3.0 stub, and the sandbox outbox."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import SecretStr
from tencent_api import TencentApiStub, running_stub

from caiyun.adapters.sms import (
    SANDBOX_OUTBOX,
    SandboxSms,
    SmsError,
    SmsRateLimited,
    SmsSender,
    TencentSms,
    sandbox_outbox,
)
from caiyun.data.embedded import EmbeddedEngine
from caiyun.settings import Settings

SECRET_ID = "AKIDtest"
SECRET_KEY = "testkey"
PHONE = "13800000000"
CODE = "482913"


def _status(code: str, phone: str = "+86" + PHONE) -> dict[str, Any]:
    return {
        "SerialNo": "2028:0000",
        "PhoneNumber": phone,
        "Fee": 1,
        "SessionContext": "",
        "Code": code,
        "Message": "send success" if code == "Ok" else f"failed for {phone}",
        "IsoCode": "CN",
    }


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch) -> Iterator[TencentApiStub]:
    with running_stub(monkeypatch, "sms", SECRET_ID, SECRET_KEY) as server:
        server.reply = {"SendStatusSet": [_status("Ok")]}
        yield server


def _settings(port: int) -> Settings:
    return Settings(
        sms_provider="tencent",
        tencent_secret_id=SECRET_ID,
        tencent_secret_key=SECRET_KEY,
        sms_endpoint=f"127.0.0.1:{port}",
        sms_scheme="http",
        sms_sdk_app_id="1400000000",
        sms_sign_name="彩云居家",
        sms_template_code="100001",
    )


@pytest.fixture
def sender(stub: TencentApiStub) -> TencentSms:
    return TencentSms(_settings(stub.port), timeout_s=2)


def _assert_private(error: SmsError) -> None:
    assert PHONE not in str(error)
    assert CODE not in str(error)
    # The SDK's exception (whose message may echo the request) must not ride along.
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


def test_send_posts_v20210111_request_with_plus86_phone_and_template(
    stub: TencentApiStub, sender: TencentSms
) -> None:
    sender.send(PHONE, "code", [CODE, "5"])

    [request] = stub.requests
    assert request["path"] == "/"
    assert request["headers"]["x-tc-action"] == "SendSms"
    assert request["headers"]["x-tc-version"] == "2021-01-11"
    assert request["headers"]["x-tc-region"] == "ap-guangzhou"
    assert request["headers"]["host"] == f"127.0.0.1:{stub.port}"
    assert request["json"] == {
        "PhoneNumberSet": ["+8613800000000"],
        "SmsSdkAppId": "1400000000",
        "SignName": "彩云居家",
        "TemplateId": "100001",
        "TemplateParamSet": [CODE, "5"],
    }


def test_request_signature_verifies_with_secret_key(
    stub: TencentApiStub, sender: TencentSms
) -> None:
    sender.send(PHONE, "code", [CODE, "5"])

    [request] = stub.requests
    assert request["headers"]["authorization"].startswith("TC3-HMAC-SHA256 Credential=AKIDtest/")
    assert request["signature_valid"] is True


def test_wrong_secret_key_fails_signature_and_is_not_retryable(stub: TencentApiStub) -> None:
    settings = _settings(stub.port).model_copy(update={"tencent_secret_key": SecretStr("wrong")})

    with pytest.raises(SmsError) as caught:
        TencentSms(settings, timeout_s=2).send(PHONE, "code", [CODE, "5"])

    assert stub.requests[0]["signature_valid"] is False
    assert caught.value.reason == "AuthFailure.SignatureFailure"
    assert caught.value.retryable is False
    assert caught.value.request_id == "req-1"


def test_sms_client_is_created_once_and_reused(stub: TencentApiStub, sender: TencentSms) -> None:
    sender.send(PHONE, "code", [CODE, "5"])
    first = sender._client
    sender.send(PHONE, "code", ["111111", "5"])

    assert first is not None and sender._client is first
    assert [r["json"]["TemplateParamSet"][0] for r in stub.requests] == [CODE, "111111"]


@pytest.mark.parametrize(
    "code",
    [
        "LimitExceeded.PhoneNumberThirtySecondLimit",
        "LimitExceeded.PhoneNumberOneHourLimit",
        "LimitExceeded.PhoneNumberDailyLimit",
        "LimitExceeded.PhoneNumberSameContentDailyLimit",
        "LimitExceeded.DeliveryFrequencyLimit",
        "LimitExceeded.AppDailyLimit",
        "LimitExceeded.SomeFutureLimit",
    ],
)
def test_per_number_limit_status_raises_rate_limited(
    stub: TencentApiStub, sender: TencentSms, code: str
) -> None:
    stub.reply = {"SendStatusSet": [_status(code)]}

    with pytest.raises(SmsRateLimited) as caught:
        sender.send(PHONE, "code", [CODE, "5"])

    assert caught.value.reason == code
    assert caught.value.retryable is True
    _assert_private(caught.value)


@pytest.mark.parametrize(
    ("code", "retryable"),
    [
        ("InvalidParameterValue.IncorrectPhoneNumber", False),
        ("FailedOperation.PhoneNumberInBlacklist", False),
        ("FailedOperation.TemplateIncorrectOrUnapproved", False),
        ("FailedOperation.TemplateParamSetNotMatchApprovedTemplate", False),
        ("InternalError.Timeout", True),
        ("FailedOperation.FailResolvePacket", True),
    ],
)
def test_failed_status_code_raises_sms_error_without_phone_or_code_in_message(
    stub: TencentApiStub, sender: TencentSms, code: str, retryable: bool
) -> None:
    stub.reply = {"SendStatusSet": [_status(code)]}

    with pytest.raises(SmsError) as caught:
        sender.send(PHONE, "code", [CODE, "5"])

    assert not isinstance(caught.value, SmsRateLimited)
    assert caught.value.reason == code
    assert caught.value.retryable is retryable
    assert code in str(caught.value)
    _assert_private(caught.value)


def test_every_status_entry_is_checked(stub: TencentApiStub, sender: TencentSms) -> None:
    stub.reply = {"SendStatusSet": [_status("Ok"), _status("LimitExceeded.PhoneNumberDailyLimit")]}

    with pytest.raises(SmsRateLimited):
        sender.send(PHONE, "code", [CODE, "5"])


@pytest.mark.parametrize(
    ("code", "exc_type", "retryable"),
    [
        ("InternalError.OtherError", SmsError, True),
        ("LimitExceeded.AppDailyLimit", SmsRateLimited, True),
        ("UnauthorizedOperation.SmsSdkAppIdVerifyFail", SmsError, False),
    ],
)
def test_api_error_response_maps_to_sms_error(
    stub: TencentApiStub,
    sender: TencentSms,
    code: str,
    exc_type: type[SmsError],
    retryable: bool,
) -> None:
    stub.reply = {"Error": {"Code": code, "Message": f"rejected {PHONE} with {CODE}"}}

    with pytest.raises(exc_type) as caught:
        sender.send(PHONE, "code", [CODE, "5"])

    assert caught.value.reason == code
    assert caught.value.retryable is retryable
    assert caught.value.request_id == "req-1"
    _assert_private(caught.value)


def test_error_body_with_unexpected_content_type_is_not_taken_as_success(
    stub: TencentApiStub, sender: TencentSms
) -> None:
    # The SDK only looks for Response.Error when Content-Type is exactly application/json.
    stub.content_type = "application/json; charset=utf-8"
    stub.reply = {"Error": {"Code": "InternalError.OtherError", "Message": "boom"}}

    with pytest.raises(SmsError) as caught:
        sender.send(PHONE, "code", [CODE, "5"])

    assert caught.value.reason == "NoSendStatus"
    assert caught.value.retryable is True


def test_unreachable_endpoint_is_a_retryable_sms_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on the port any more: the connection is refused.

    with pytest.raises(SmsError) as caught:
        TencentSms(_settings(port), timeout_s=2).send(PHONE, "code", [CODE, "5"])

    assert not isinstance(caught.value, SmsRateLimited)
    assert caught.value.reason == "ClientNetworkError"
    assert caught.value.retryable is True
    _assert_private(caught.value)


def test_unknown_template_or_wrong_params_raise_value_error_before_sending(
    stub: TencentApiStub, sender: TencentSms
) -> None:
    with pytest.raises(ValueError, match="unknown SMS template"):
        sender.send(PHONE, "welcome", [])
    with pytest.raises(ValueError, match="takes 2 parameters"):
        sender.send(PHONE, "code", [CODE])
    with pytest.raises(ValueError, match="mainland"):
        sender.send("12345", "code", [CODE, "5"])

    assert stub.requests == []


def test_module_import_does_not_load_the_sdk() -> None:
    probe = (
        "import sys, caiyun.adapters.sms; "
        "print(sorted(m for m in sys.modules if m.startswith('tencentcloud')))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}

    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )

    assert result.stdout.strip() == "[]"


class FixedClock:
    """A clock that stands still until told to move."""

    def __init__(self) -> None:
        self.moment = datetime(2024, 5, 1, 2, 0, 0, tzinfo=timezone.utc)

    def now(self) -> datetime:
        return self.moment


@pytest.fixture
def db() -> Any:
    return EmbeddedEngine(None).database


def test_sandbox_stores_message_text_and_code(db: Any) -> None:
    clock = FixedClock()
    sms: SmsSender = SandboxSms(db, clock)

    sms.send(PHONE, "code", [CODE, "5"])

    stored = db[SANDBOX_OUTBOX].find_one({"phone": PHONE})
    assert stored["text"] == f"【彩云居家】您的验证码为{CODE}，5分钟内有效，请勿泄露。"
    assert stored["code"] == CODE
    assert stored["template"] == "code"
    assert stored["sent_at"] == clock.moment
    assert isinstance(stored["_id"], str)


def test_sandbox_outbox_answers_newest_first_for_that_phone_only(db: Any) -> None:
    clock = FixedClock()
    sms = SandboxSms(db, clock)
    sms.send(PHONE, "code", ["111111", "5"])
    clock.moment += timedelta(minutes=1)
    sms.send(PHONE, "code", ["222222", "5"])
    sms.send("13900000000", "code", ["333333", "5"])

    outbox = sandbox_outbox(db, PHONE)

    assert [m["code"] for m in outbox] == ["222222", "111111"]
    assert outbox[0] == {
        "phone": PHONE,
        "text": "【彩云居家】您的验证码为222222，5分钟内有效，请勿泄露。",
        "code": "222222",
        "sent_at": "2024-05-01T10:01:00+08:00",
    }
    assert [m["code"] for m in sandbox_outbox(db, PHONE, limit=1)] == ["222222"]


def test_sandbox_breaks_sent_at_ties_by_insertion_order(db: Any) -> None:
    sms = SandboxSms(db, FixedClock())
    for code in ("111111", "222222", "333333"):
        sms.send(PHONE, "code", [code, "5"])

    assert [m["code"] for m in sandbox_outbox(db, PHONE)] == ["333333", "222222", "111111"]


def test_sandbox_rejects_unknown_template(db: Any) -> None:
    with pytest.raises(ValueError, match="unknown SMS template"):
        SandboxSms(db, FixedClock()).send(PHONE, "welcome", [])

    assert sandbox_outbox(db, PHONE) == []
