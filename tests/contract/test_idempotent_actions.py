"""A create that is safe to retry declares it once, in its action's row (``once=...``)."""

from __future__ import annotations

from typing import Any

import pytest

from caiyun.contract import repair
from caiyun.domain.idempotency import Key
from caiyun.runtime import Account, Action, Call
from caiyun.sandbox.functions import function_names, handler


def _rows() -> list[tuple[str, Action]]:
    return [
        (f"{name}.{action_name}", action)
        for name in function_names()
        for action_name, action in handler(name).actions.items()
    ]


def test_every_action_taking_a_request_id_declares_its_idempotency_in_its_row() -> None:
    takes = {where for where, a in _rows() if "request_id" in a.request.model_fields}
    declared = {where: a.once for where, a in _rows() if a.once is not None}
    assert takes == set(declared)
    assert declared == {
        "bills.pay": "bills.pay",
        "complaint.create": "complaint.create",
        "notify.publish_notice": "notice.publish",
        "repair.create": "repair.create",
        "visitor.register": "visitor.register",
    }


def test_a_row_declaring_idempotency_whose_handler_takes_no_key_is_refused() -> None:
    def create(call: Call, req: repair.Create, account: Account) -> dict[str, Any]:
        return {}

    with pytest.raises(TypeError, match="takes `once`"):
        Action(lambda call: {}, create, once="repair.create")


def test_a_handler_taking_a_key_in_a_row_that_declares_none_is_refused() -> None:
    def create(call: Call, req: repair.Create, account: Account, once: Key | None) -> None:
        return None

    with pytest.raises(TypeError, match="takes `once`"):
        Action(lambda call: {}, create)


def test_an_idempotent_action_whose_request_has_no_request_id_is_refused() -> None:
    def cancel(call: Call, req: repair.RepairRef, account: Account, once: Key | None) -> None:
        return None

    with pytest.raises(TypeError, match="carries request_id"):
        Action(lambda call: {}, cancel, once="repair.cancel")
