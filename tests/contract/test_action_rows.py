"""An action row takes its request and reply models from its handler's annotations."""

from __future__ import annotations

from typing import Any

import pytest

from caiyun.contract import repair as api
from caiyun.runtime import Action, Call, signed_in


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
