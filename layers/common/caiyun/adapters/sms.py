"""Text messages: Tencent Cloud SMS (API v20210111) in production, a local outbox in the sandbox.

The domain names a logical template ("code") and its parameters; each sender maps that to what
its backend needs. Exceptions carry the provider's code only: phone numbers and parameters (the
verification code among them) never reach an exception message or a log line from here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pymongo import IndexModel

from caiyun.clock import Clock, iso
from caiyun.data.schema import declare
from caiyun.ids import new_id

if TYPE_CHECKING:
    from tencentcloud.sms.v20210111.sms_client import SmsClient

    from caiyun.settings import Settings

SANDBOX_OUTBOX = declare("sandbox_sms", IndexModel([("phone", 1), ("sent_at", -1)]))

_SANDBOX_SIGN = "彩云居家"
_MAINLAND_MOBILE = re.compile(r"1[0-9]{10}")
_OK = "Ok"
_RATE_LIMIT_PREFIX = "LimitExceeded."
# Codes that will fail the same way on every retry: a bad number, template, signature or account.
_PERMANENT_PREFIXES = (
    "InvalidParameter",
    "MissingParameter",
    "UnsupportedOperation",
    "UnauthorizedOperation",
    "AuthFailure",
)
_PERMANENT_FAILED_OPERATIONS = frozenset(
    {
        "FailedOperation.ContainSensitiveWord",
        "FailedOperation.InsufficientBalanceInSmsPackage",
        "FailedOperation.MissingSignature",
        "FailedOperation.PhoneNumberInBlacklist",
        "FailedOperation.PhoneNumberParseFail",
        "FailedOperation.SignatureIncorrectOrUnapproved",
        "FailedOperation.TemplateIdNotExist",
        "FailedOperation.TemplateIncorrectOrUnapproved",
        "FailedOperation.TemplateParamSetNotMatchApprovedTemplate",
        "FailedOperation.TemplateUnapprovedOrNotExist",
    }
)


@dataclass(frozen=True)
class _Template:
    params: int  # how many parameters the template takes
    text: str  # the sandbox rendering; {0}, {1}... are the parameters
    code_param: int | None  # which parameter is a verification code, if any
    # The signature the sandbox shows; a bank's own messages carry the bank's, not ours.
    sign: str = _SANDBOX_SIGN


_TEMPLATES = {
    "code": _Template(params=2, text="您的验证码为{0}，{1}分钟内有效，请勿泄露。", code_param=0),
    # Sent by the ICBC sandbox to the bank-reserved phone; in production ICBC sends it itself.
    "icbc_realname": _Template(
        params=1,
        text="您正在进行实名认证，验证码{0}，5分钟内有效。",
        code_param=0,
        sign="工商银行",
    ),
    "icbc_autodebit": _Template(
        params=1,
        text="您正在签署代扣协议，验证码{0}，5分钟内有效。",
        code_param=0,
        sign="工商银行",
    ),
}


class SmsError(Exception):
    """A message was not delivered. ``reason`` is the provider's code, never the phone."""

    def __init__(self, reason: str, *, retryable: bool, request_id: str | None = None) -> None:
        detail = f" (request {request_id})" if request_id else ""
        super().__init__(f"SMS not delivered: {reason}{detail}")
        self.reason = reason
        self.retryable = retryable
        self.request_id = request_id


class SmsRateLimited(SmsError):
    """The provider refused to send because a frequency limit (``LimitExceeded.*``) was hit."""

    def __init__(self, reason: str, *, request_id: str | None = None) -> None:
        super().__init__(reason, retryable=True, request_id=request_id)


class SmsSender(Protocol):
    """Anything that can send one templated message to one mainland mobile number."""

    def send(self, phone: str, template: str, params: list[str]) -> None:
        """Send the logical ``template`` with ``params`` to ``phone``, or raise SmsError."""
        ...


def _template(name: str, params: list[str]) -> _Template:
    spec = _TEMPLATES.get(name)
    if spec is None:
        raise ValueError(f"unknown SMS template {name!r}")
    if len(params) != spec.params:
        raise ValueError(f"SMS template {name!r} takes {spec.params} parameters")
    return spec


def _bare_mobile(phone: str) -> str:
    bare = phone.removeprefix("+86")
    if not _MAINLAND_MOBILE.fullmatch(bare):
        raise ValueError("not a mainland mobile number")
    return bare


def _failure(code: str | None, request_id: str | None) -> SmsError:
    reason = code or "Unknown"
    if reason.startswith(_RATE_LIMIT_PREFIX):
        return SmsRateLimited(reason, request_id=request_id)
    permanent = reason.startswith(_PERMANENT_PREFIXES) or reason in _PERMANENT_FAILED_OPERATIONS
    return SmsError(reason, retryable=not permanent, request_id=request_id)


class TencentSms:
    """Sends through Tencent Cloud SMS API v20210111 with the official SDK."""

    def __init__(self, settings: Settings, timeout_s: float = 5.0) -> None:
        self._settings = settings
        self._timeout_s = timeout_s
        self._template_ids = {"code": settings.sms_template_code}
        self._client: SmsClient | None = None

    def _sms_client(self) -> SmsClient:
        if self._client is None:
            # Imported here: the SDK's model module is large and most calls never send an SMS.
            from tencentcloud.common.credential import Credential
            from tencentcloud.common.profile.client_profile import ClientProfile
            from tencentcloud.common.profile.http_profile import HttpProfile
            from tencentcloud.sms.v20210111.sms_client import SmsClient

            s = self._settings
            http = HttpProfile(
                protocol=s.sms_scheme, endpoint=s.sms_endpoint, reqTimeout=self._timeout_s
            )
            self._client = SmsClient(
                Credential(
                    s.tencent_secret_id.get_secret_value(), s.tencent_secret_key.get_secret_value()
                ),
                s.sms_region,
                ClientProfile(httpProfile=http),
            )
        return self._client

    def send(self, phone: str, template: str, params: list[str]) -> None:
        """Send one message; raise SmsRateLimited or SmsError unless Tencent accepted it."""
        _template(template, params)
        template_id = self._template_ids.get(template)
        if not template_id:
            raise ValueError(f"no Tencent template id configured for {template!r}")
        number = "+86" + _bare_mobile(phone)

        from tencentcloud.common.exception.tencent_cloud_sdk_exception import (
            TencentCloudSDKException,
        )
        from tencentcloud.sms.v20210111.models import SendSmsRequest

        request = SendSmsRequest()
        request.PhoneNumberSet = [number]
        request.SmsSdkAppId = self._settings.sms_sdk_app_id
        request.SignName = self._settings.sms_sign_name
        request.TemplateId = template_id
        request.TemplateParamSet = list(params)
        try:
            response: Any = self._sms_client().SendSms(request)
        except TencentCloudSDKException as exc:
            # Network errors come back as ClientNetworkError / ServerNetworkError (retryable).
            # `from None`: the SDK's message may echo the request, phone number included.
            raise _failure(exc.get_code(), exc.get_request_id()) from None

        statuses = response.SendStatusSet or []
        if not statuses:
            # The SDK skips its error check unless Content-Type is exactly application/json.
            raise SmsError("NoSendStatus", retryable=True, request_id=response.RequestId)
        for status in statuses:
            if status.Code != _OK:
                raise _failure(status.Code, response.RequestId)


class SandboxSms:
    """The sandbox sender: stores each message as its text would read, for `sandbox_outbox`."""

    def __init__(self, db: Any, clock: Clock) -> None:
        self._outbox = db[SANDBOX_OUTBOX]
        self._clock = clock

    def send(self, phone: str, template: str, params: list[str]) -> None:
        """Record the message in the sandbox outbox instead of sending it."""
        spec = _template(template, params)
        self._outbox.insert_one(
            {
                "_id": new_id(),
                "phone": _bare_mobile(phone),
                "text": f"【{spec.sign}】" + spec.text.format(*params),
                "code": None if spec.code_param is None else params[spec.code_param],
                "template": template,
                "sent_at": self._clock.now(),
            }
        )


def sandbox_outbox(db: Any, phone: str, limit: int = 20) -> list[dict[str, Any]]:
    """The sandbox messages sent to ``phone``, newest first."""
    cursor = (
        db[SANDBOX_OUTBOX]
        .find({"phone": phone.removeprefix("+86")})
        .sort([("sent_at", -1), ("_id", -1)])
        .limit(limit)
    )
    return [
        {"phone": m["phone"], "text": m["text"], "code": m["code"], "sent_at": iso(m["sent_at"])}
        for m in cursor
    ]
