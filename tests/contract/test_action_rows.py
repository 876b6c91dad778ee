"""An action row takes its request and reply models from its handler's annotations."""

from __future__ import annotations

import ast
import functools
from pathlib import Path
from typing import Any

import pytest

from caiyun.contract import repair as api
from caiyun.runtime import Account, Action, Call, signed_in


def takes_a_model(call: Call, req: api.UploadUrl) -> api.CategoriesReply:
    raise AssertionError("not called")


def takes_a_mapping(call: Call, req: dict[str, Any]) -> api.CategoriesReply:
    raise AssertionError("not called")


def test_a_row_reads_its_models_from_the_handlers_signature() -> None:
    row = Action(signed_in, takes_a_model, ("FORBIDDEN",))

    assert (row.request, row.reply) == (api.UploadUrl, api.CategoriesReply)
    assert row.errors == ("FORBIDDEN",)


def test_a_handler_without_a_request_model_cannot_be_a_row() -> None:
    with pytest.raises(TypeError, match="takes_a_mapping"):
        Action(signed_in, takes_a_mapping)


def takes_the_caller(call: Call, req: api.UploadUrl, account: Account) -> api.CategoriesReply:
    raise AssertionError("not called")


def test_a_handler_naming_a_third_parameter_is_handed_the_checked_caller() -> None:
    assert Action(signed_in, takes_the_caller).takes_caller is True
    assert Action(signed_in, takes_a_model).takes_caller is False


def test_a_wrapped_handler_keeps_the_models_and_the_caller_of_the_one_it_wraps() -> None:
    @functools.wraps(takes_the_caller)
    def timed(*args: Any, **kwargs: Any) -> Any:
        return takes_the_caller(*args, **kwargs)

    row = Action(signed_in, timed)

    assert (row.request, row.reply, row.takes_caller) == (
        api.UploadUrl,
        api.CategoriesReply,
        True,
    )


def test_every_handler_with_a_policy_takes_its_caller_instead_of_checking_again() -> None:
    functions = Path(__file__).resolve().parents[2] / "functions"
    checked_again = [
        f"{path.parent.name}: line {node.lineno}"
        for path in functions.glob("*/index.py")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Attribute) and node.attr == "require_staff"
    ]
    assert checked_again == []
