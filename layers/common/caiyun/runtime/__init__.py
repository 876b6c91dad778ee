"""The entry machinery every cloud function shares: events, callers, actions, envelope, logs."""

from caiyun.domain.idempotency import Key
from caiyun.runtime.dispatch import Action, Call, Caller, CloudFunction
from caiyun.runtime.lazy import lazy_import
from caiyun.runtime.pages import page_reply
from caiyun.runtime.policies import admin_only, anyone, signed_in, staff_role

__all__ = [
    "Action",
    "Call",
    "Caller",
    "CloudFunction",
    "Key",
    "admin_only",
    "anyone",
    "lazy_import",
    "page_reply",
    "signed_in",
    "staff_role",
]
