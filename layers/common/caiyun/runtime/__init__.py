"""The entry machinery every cloud function shares: events, callers, actions, envelope, logs."""

from caiyun.domain.idempotency import Key
from caiyun.runtime.dispatch import Action, Call, CloudFunction
from caiyun.runtime.lazy import lazy_import
from caiyun.runtime.pages import page_reply
from caiyun.runtime.policies import admin_only, anyone, signed_in, staff_role
from caiyun.stores.accounts import Account
from caiyun.stores.staff import StaffRecord

__all__ = [
    "Account",
    "Action",
    "Call",
    "CloudFunction",
    "Key",
    "StaffRecord",
    "admin_only",
    "anyone",
    "lazy_import",
    "page_reply",
    "signed_in",
    "staff_role",
]
