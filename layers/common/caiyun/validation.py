"""Turning pydantic's validation errors into the contract's INVALID_ARGUMENT details."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic_core import ValidationError

from caiyun.errors import AppError

if TYPE_CHECKING:
    from pydantic import BaseModel

_REASONS = {
    "missing": "必填",
    "extra_forbidden": "不支持的字段",
    "string_too_long": "过长",
    "string_too_short": "过短",
    "string_pattern_mismatch": "格式不正确",
    "literal_error": "取值不在允许范围内",
    "enum": "取值不在允许范围内",
    "greater_than_equal": "超出允许范围",
    "less_than_equal": "超出允许范围",
    "greater_than": "超出允许范围",
    "less_than": "超出允许范围",
    "too_long": "数量过多",
    "too_short": "数量过少",
}


def _field_name(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc) or "(body)"


def invalid_argument(exc: ValidationError) -> AppError:
    """INVALID_ARGUMENT naming each bad field with a Chinese reason (never the bad value)."""
    fields: dict[str, str] = {}
    for error in exc.errors(include_url=False, include_input=False):
        kind = error["type"]
        if kind == "value_error":
            # Our own validators raise ValueError with a Chinese reason meant for the user.
            reason = str(error.get("ctx", {}).get("error", "无效"))
        elif kind in _REASONS:
            reason = _REASONS[kind]
        else:
            reason = "类型不正确" if kind.endswith("_type") else "无效"
        fields.setdefault(_field_name(tuple(error["loc"])), reason)
    return AppError("INVALID_ARGUMENT", details={"fields": fields})


def validate(model: type[BaseModel], payload: dict[str, Any]) -> BaseModel:
    """Validate a request payload against its model, or raise INVALID_ARGUMENT."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise invalid_argument(exc) from None
