"""The entry machinery every cloud function shares: events, callers, actions, envelope, logs."""

from caiyun.runtime.actions import Action, Call, CloudFunction
from caiyun.runtime.policies import admin_only, anyone, signed_in, staff_role

__all__ = [
    "Action",
    "Call",
    "CloudFunction",
    "admin_only",
    "anyone",
    "signed_in",
    "staff_role",
]
