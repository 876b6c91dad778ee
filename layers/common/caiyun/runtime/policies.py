"""Who may call an action: checked before the request is even validated."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from caiyun.runtime.dispatch import Call
    from caiyun.stores.accounts import Account
    from caiyun.stores.staff import StaffRecord


@dataclass(frozen=True)
class Policy:
    """A named check on the caller; ``label`` is what the API reference shows. The check
    returns the caller it let through (None for anyone), which the handler may take."""

    label: str
    check: Callable[[Call], Any]

    def __call__(self, call: Call) -> Any:
        return self.check(call)


def _nobody_required(call: Call) -> None:
    return None


def _account_required(call: Call) -> Account:
    return call.require_account()


anyone = Policy("anyone", _nobody_required)
signed_in = Policy("account", _account_required)


def staff_role(*roles: str) -> Policy:
    """Only staff holding one of ``roles`` (their community scope is checked per request)."""

    def check(call: Call) -> StaffRecord:
        return call.require_staff(*roles)

    return Policy("staff:" + "/".join(roles), check)


admin_only = staff_role("admin")
