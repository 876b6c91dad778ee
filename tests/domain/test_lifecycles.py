"""The state machines as tables, checked without a database: which moves exist, from where, to
where and by whom, and that the filters the domain's conditional updates take from them expect
exactly those sources."""

from __future__ import annotations

import pytest

from caiyun.domain.lifecycles import COMPLAINT, LIFECYCLES, ORDER, PASS, REPAIR, Lifecycle

# Every move as the product allows it: (from, move, to, by). A rule changes here first.
RULES = {
    REPAIR.record: {
        ("pending", "cancel", "cancelled", "resident"),
        ("pending", "dispatch", "dispatched", "admin"),
        ("dispatched", "redispatch", "dispatched", "admin"),
        ("dispatched", "finish", "awaiting_rating", "repairman"),
        ("awaiting_rating", "rate", "completed", "resident"),
        ("awaiting_rating", "auto_close", "completed", "system"),
    },
    COMPLAINT.record: {
        ("submitted", "reply_processing", "processing", "admin"),
        ("submitted", "reply_resolved", "resolved", "admin"),
        ("processing", "reply_processing", "processing", "admin"),
        ("processing", "reply_resolved", "resolved", "admin"),
    },
    PASS.record: {("registered", "enter", "entered", "guard")},
    ORDER.record: {
        ("pending", "settle", "paid", "icbc"),
        ("failed", "settle", "paid", "icbc"),
        ("closed", "settle", "paid", "icbc"),
        ("pending", "decline", "failed", "icbc"),
        ("pending", "decline", "failed", "system"),
        ("pending", "close", "closed", "resident"),
        ("pending", "close", "closed", "system"),
    },
}
FINAL = {
    REPAIR.record: {"completed", "cancelled"},
    COMPLAINT.record: {"resolved"},
    PASS.record: {"entered"},
    ORDER.record: {"paid"},
}
ACTORS = ("resident", "admin", "repairman", "guard", "system", "icbc")


def _moves_from(lifecycle: Lifecycle, state: str) -> list[str]:
    return [name for name, move in lifecycle.moves.items() if state in move.sources]


def _rows(lifecycle: Lifecycle) -> set[tuple[str, str, str, str]]:
    return {
        (source, name, move.target, by)
        for name, move in lifecycle.moves.items()
        for source in move.sources
        for by in move.by
    }


@pytest.mark.parametrize("lifecycle", LIFECYCLES, ids=lambda lc: lc.record)
def test_the_table_holds_exactly_the_products_moves(lifecycle: Lifecycle) -> None:
    assert _rows(lifecycle) == RULES[lifecycle.record]


@pytest.mark.parametrize("lifecycle", LIFECYCLES, ids=lambda lc: lc.record)
def test_every_move_starts_and_ends_in_a_state_of_the_record(lifecycle: Lifecycle) -> None:
    for move in lifecycle.moves.values():
        assert set(move.sources) <= set(lifecycle.states)
        assert move.target in lifecycle.states


@pytest.mark.parametrize("lifecycle", LIFECYCLES, ids=lambda lc: lc.record)
def test_every_state_is_reached_from_the_first_and_only_final_states_end(
    lifecycle: Lifecycle,
) -> None:
    reached, frontier = {lifecycle.states[0]}, [lifecycle.states[0]]
    while frontier:
        state = frontier.pop()
        for name in _moves_from(lifecycle, state):
            target = lifecycle.target(name)
            if target not in reached:
                reached.add(target)
                frontier.append(target)

    assert reached == set(lifecycle.states)
    assert {s for s in lifecycle.states if not _moves_from(lifecycle, s)} == FINAL[lifecycle.record]


@pytest.mark.parametrize("lifecycle", LIFECYCLES, ids=lambda lc: lc.record)
def test_a_move_is_allowed_only_from_its_sources_and_only_to_its_makers(
    lifecycle: Lifecycle,
) -> None:
    allowed = {(s, m, by) for s, m, _, by in RULES[lifecycle.record]}
    for state in lifecycle.states:
        for move in [*lifecycle.moves, "no_such_move"]:
            for by in ACTORS:
                assert lifecycle.allows(state, move, by) == ((state, move, by) in allowed)


def test_an_updates_filter_expects_the_moves_sources() -> None:
    assert REPAIR.expects("cancel") == {"status": "pending"}
    assert COMPLAINT.expects("reply_resolved") == {"status": {"$in": ["submitted", "processing"]}}
    assert ORDER.expects("settle") == {"status": {"$in": ["pending", "failed", "closed"]}}
    assert (REPAIR.target("auto_close"), PASS.target("enter")) == ("completed", "entered")
