"""Building a paged list reply from a domain page."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from pydantic import BaseModel

    from caiyun.contract.common import PageRequest

R = TypeVar("R", bound="BaseModel")


def page_reply(model: type[R], req: PageRequest, items: list[Any], total: int, **extra: Any) -> R:
    """A list reply in the contract's shape: ``items``, ``total``, ``page``, ``page_size``."""
    return model.model_validate(
        {"items": items, "total": total, "page": req.page, "page_size": req.page_size, **extra}
    )
