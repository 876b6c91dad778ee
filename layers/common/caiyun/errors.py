"""The error codes of the contract: one exception type, a stable code, a Chinese message."""

from __future__ import annotations

from typing import Any, Literal, get_args

# The contract's codes, as a type: a code the list does not hold is caught by the type checker
# wherever a refusal or an action's documented errors name it.
ErrorCode = Literal[
    "INVALID_ARGUMENT",
    "UNKNOWN_ACTION",
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "NOT_FOUND",
    "CONFLICT",
    "RATE_LIMITED",
    "INTERNAL",
    "UNAVAILABLE",
    "ACCOUNT_NOT_FOUND",
    "CODE_INVALID",
    "OWNER_MISMATCH",
    "HOUSE_NOT_BOUND",
    "REALNAME_REQUIRED",
    "BILL_NOT_PAYABLE",
    "NOT_ICBC_CARD",
    "INSUFFICIENT_BALANCE",
]

# code -> (HTTP status, default message shown to the resident)
ERROR_CODES: dict[str, tuple[int, str]] = {
    "INVALID_ARGUMENT": (400, "请求参数有误"),
    "UNKNOWN_ACTION": (400, "不支持的操作"),
    "UNAUTHENTICATED": (401, "请先登录"),
    "FORBIDDEN": (403, "无权进行此操作"),
    "NOT_FOUND": (404, "记录不存在"),
    "CONFLICT": (409, "当前状态不允许此操作"),
    "RATE_LIMITED": (429, "操作过于频繁，请稍后再试"),
    "INTERNAL": (500, "系统繁忙，请稍后再试"),
    "UNAVAILABLE": (503, "服务暂时不可用，请稍后再试"),
    "ACCOUNT_NOT_FOUND": (403, "该手机号未登记，请前往物业中心授权"),
    "CODE_INVALID": (403, "验证码错误或已过期"),
    "OWNER_MISMATCH": (403, "业主信息不匹配，请核对后重试"),
    "HOUSE_NOT_BOUND": (403, "请先绑定房屋"),
    "REALNAME_REQUIRED": (403, "请先完成实名认证"),
    "BILL_NOT_PAYABLE": (403, "账单当前不可支付"),
    "NOT_ICBC_CARD": (403, "请使用工商银行一类借记卡"),
    "INSUFFICIENT_BALANCE": (403, "工行账户余额不足，请充值后再试"),
}
assert set(ERROR_CODES) == set(get_args(ErrorCode)), "ErrorCode and ERROR_CODES list one set"

# What ``error.details`` may hold, by key: (JSON shape, when it is sent and what it means). No
# error carries anything else, and each key always has this shape (AppError checks both).
DETAILS: dict[str, tuple[str, str]] = {
    "fields": (
        "object: field → Chinese reason",
        "`INVALID_ARGUMENT`: every refused field of the request. A nested field is named by its "
        "path (`community.name`), a list entry by its index (`images.0`), a missing agreement "
        "by its code (`agreements.privacy`); `(body)` is the request as a whole",
    ),
    "missing": (
        "list of strings",
        "`NOT_FOUND` of an action given several ids: the ids that name nothing",
    ),
    "retry_after_s": (
        "integer ≥ 1",
        "`RATE_LIMITED`: seconds until the same call may succeed",
    ),
    "retryable": (
        "boolean",
        "`true` on `UNAVAILABLE` (the service behind the call failed, not the request) and on the "
        "`CONFLICT` of a create whose first try (same `request_id`) is still being processed: "
        "send the same request again later. `false` only on the `UNAVAILABLE` of a function "
        "deployed without its settings, which no retry mends",
    ),
}


def _details_problem(details: dict[str, Any]) -> str | None:
    for key, value in details.items():
        if key not in DETAILS:
            return f"unknown details key {key!r}"
        if key == "fields" and not (
            isinstance(value, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        ):
            return "details.fields must map field names to reasons"
        if key == "missing" and not (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            return "details.missing must list ids"
        if key == "retry_after_s" and not (isinstance(value, int) and value >= 1):
            return "details.retry_after_s must be a whole number of seconds"
        if key == "retryable" and not isinstance(value, bool):
            return "details.retryable is true or false"
    return None


class AppError(Exception):
    """A refusal the caller should see: stable code, Chinese message, optional details."""

    def __init__(
        self, code: ErrorCode, message: str | None = None, details: dict[str, Any] | None = None
    ) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown error code {code}")
        details = dict(details or {})
        if code == "UNAVAILABLE":
            details.setdefault("retryable", True)
        problem = _details_problem(details)
        if problem is not None:
            raise ValueError(problem)
        self.code = code
        self.message = message or ERROR_CODES[code][1]
        self.details = details
        super().__init__(code)

    @property
    def status(self) -> int:
        """The HTTP status this code maps to."""
        return ERROR_CODES[self.code][0]

    def to_envelope(self) -> dict[str, Any]:
        """The contract's failure envelope."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"ok": False, "error": error}


class SettingsUnavailable(Exception):
    """This container cannot serve: its settings are missing or refused.

    ``problems`` name each setting and why, never a value; the runtime logs them and answers
    UNAVAILABLE (caiyun.settings.get_settings raises it).
    """

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems
