"""The state machines of the main records, as plain tables of allowed moves.

Each move names the states it may start from, the state it ends in and who makes it. The domain
takes both halves of its conditional updates from here: the filter expects one of the move's
sources (:meth:`Lifecycle.expects`), the update sets its target (:meth:`Lifecycle.target`), so
two callers racing can never both make a move, and a move the table does not hold cannot be
written. The tables are tested on their own, without a database
(``tests/domain/test_lifecycles.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from caiyun import labels


@dataclass(frozen=True)
class Move:
    """One allowed move: from any of ``sources`` to ``target``, made by one of ``by``."""

    sources: tuple[str, ...]
    target: str
    by: frozenset[str]


@dataclass(frozen=True)
class Lifecycle:
    """A record's states (in the order a record goes through them) and its moves by name."""

    record: str
    states: tuple[str, ...]
    moves: dict[str, Move]

    def expects(self, move: str) -> dict[str, Any]:
        """The filter a conditional update of ``move`` holds: the record is in a source state."""
        sources = self.moves[move].sources
        return {"status": sources[0] if len(sources) == 1 else {"$in": list(sources)}}

    def target(self, move: str) -> str:
        """The state ``move`` ends in."""
        return self.moves[move].target

    def allows(self, state: str, move: str, by: str) -> bool:
        """Whether ``by`` may make ``move`` on a record in ``state``."""
        found = self.moves.get(move)
        return found is not None and state in found.sources and by in found.by


def _one(*roles: str) -> frozenset[str]:
    return frozenset(roles)


REPAIR = Lifecycle(
    "repair",
    tuple(labels.LABELS["repair_status"]),
    {
        "cancel": Move(("pending",), "cancelled", _one("resident")),
        "dispatch": Move(("pending",), "dispatched", _one("admin")),
        "redispatch": Move(("dispatched",), "dispatched", _one("admin")),
        "finish": Move(("dispatched",), "awaiting_rating", _one("repairman")),
        "rate": Move(("awaiting_rating",), "completed", _one("resident")),
        "auto_close": Move(("awaiting_rating",), "completed", _one("system")),
    },
)

COMPLAINT = Lifecycle(
    "complaint",
    tuple(labels.LABELS["complaint_status"]),
    {
        # An admin's reply says where the complaint stands: still being handled, or resolved.
        "reply_processing": Move(("submitted", "processing"), "processing", _one("admin")),
        "reply_resolved": Move(("submitted", "processing"), "resolved", _one("admin")),
    },
)

# A visitor pass as stored; "valid", "used" and "expired" are how it is shown (the time
# decides between valid and expired), "forged" only a scan's result.
PASS = Lifecycle(
    "visitor pass",
    ("registered", "entered"),
    {"enter": Move(("registered",), "entered", _one("guard"))},
)

ORDER = Lifecycle(
    "payment order",
    tuple(labels.LABELS["order_status"]),
    {
        # ICBC's word that the money arrived wins over an order that ended meanwhile: its bills
        # are settled, or the money is flagged to be refunded.
        "settle": Move(("pending", "failed", "closed"), "paid", _one("icbc")),
        "decline": Move(("pending",), "failed", _one("icbc", "system")),
        "close": Move(("pending",), "closed", _one("resident", "system")),
    },
)

LIFECYCLES = (REPAIR, COMPLAINT, PASS, ORDER)
