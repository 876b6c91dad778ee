"""Real-name verification through ICBC, the e-wallet, the auto-debit (代扣) consent and the
daily auto-debit run: the account function against the real ICBC client and the ICBC sandbox."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from billing import (
    ADMIN,
    ALICE,
    BOB,
    ERIN,
    NOBODY,
    get_order,
    list_bills,
    messages,
    move_in,
    pay,
    with_id_check,
    with_luhn,
)
from conftest import invoke
from worlds import GARDEN, ok, owner_row, refused, staff_account

from caiyun.adapters.sms import sandbox_outbox
from caiyun.clock import business_date
from caiyun.domain import accounts, appconfig, houses, payments, realname
from caiyun.domain.owner_import import import_owners
from caiyun.sandbox.icbc import OPENING_BALANCE_FEN, FakeIcbc
from caiyun.services import Services

OTHER_BANK_CARD = with_luhn("622848000012345670")  # Agricultural Bank, not ICBC


@pytest.fixture
def world(svc: Services) -> SimpleNamespace:
    """彩云花园 with ALICE and ERIN in 1栋-101, BOB in 1栋-102, NOBODY homeless, and its admin."""
    db, now = svc.db, svc.clock.now()
    rows = [owner_row(101, ALICE.name, ALICE.phone), owner_row(102, BOB.name, BOB.phone)]
    garden = import_owners(svc, GARDEN, rows)
    h101, h102 = (houses.get(db, r.house_id) for r in garden.rows)
    ids = move_in(
        svc,
        now,
        (ALICE, h101, "owner"),
        (ERIN, h101, "family"),
        (BOB, h102, "owner"),
        (NOBODY, None, None),
    )
    staff_account(svc, "13900000001", "王经理", "admin", [garden.community_id], ADMIN, now=now)
    return SimpleNamespace(ids=ids, garden=garden.community_id, h101=h101, h102=h102)


ALL_AGREEMENTS = ["wallet_service", "privacy", "autodebit"]


def start(
    who: SimpleNamespace, method: str = "card", card: str | None = None, **changes: Any
) -> dict[str, Any]:
    event = {
        "action": "realname_start",
        "method": method,
        "name": who.name,
        "id_number": who.id_number,
        "card_no": card or who.card,
        "bank_phone": who.bank_phone,
        **changes,
    }
    return invoke("account", event, who.openid)


def bank_code(svc: Services, who: SimpleNamespace) -> str:
    return sandbox_outbox(svc.db, who.bank_phone)[0]["code"]


def confirm(
    who: SimpleNamespace,
    ticket: str,
    code: str,
    agreements: list[str] | None = None,
    autodebit: bool = False,
) -> dict[str, Any]:
    event = {
        "action": "realname_confirm",
        "ticket": ticket,
        "sms_code": code,
        "agreements": ["wallet_service", "privacy"] if agreements is None else agreements,
        "autodebit": autodebit,
    }
    return invoke("account", event, who.openid)


def verify(
    svc: Services, who: SimpleNamespace, method: str = "card", autodebit: bool = False
) -> dict[str, Any]:
    card = who.card if method == "card" else OTHER_BANK_CARD
    ticket = ok(start(who, method, card))["ticket"]
    agreements = ALL_AGREEMENTS if autodebit else ["wallet_service", "privacy"]
    return ok(confirm(who, ticket, bank_code(svc, who), agreements, autodebit))


def account_doc(svc: Services, who: SimpleNamespace) -> dict[str, Any]:
    return svc.db[accounts.ACCOUNTS].find_one({"phone": who.phone})


def wallet_of(who: SimpleNamespace) -> dict[str, Any]:
    return invoke("account", {"action": "wallet"}, who.openid)


def set_autodebit(who: SimpleNamespace, enabled: bool) -> dict[str, Any]:
    return invoke("account", {"action": "set_autodebit", "enabled": enabled}, who.openid)


def transactions(who: SimpleNamespace, page: int, page_size: int) -> dict[str, Any]:
    event = {"action": "wallet_transactions", "page": page, "page_size": page_size}
    return invoke("account", event, who.openid)


def wallet_no(svc: Services, who: SimpleNamespace) -> str:
    return account_doc(svc, who)["wallet"]["wallet_no"]


def masked_id(who: SimpleNamespace) -> str:
    return who.id_number[:4] + "*" * 10 + who.id_number[-4:]


def masked_card(card: str) -> str:
    return f"{card[:4]} **** **** {card[-4:]}"


# ------------------------------------------------------------------------------ verification


def test_card_method_verifies_with_an_icbc_class_i_card(
    svc: Services, world: SimpleNamespace
) -> None:
    ticket = ok(start(ALICE))["ticket"]
    texts = sandbox_outbox(svc.db, ALICE.bank_phone)
    assert len(texts) == 1 and texts[0]["code"]
    assert not account_doc(svc, ALICE)["realname_verified"]

    summary = ok(confirm(ALICE, ticket, texts[0]["code"]))

    assert summary["wallet_class"] == "I"
    assert summary["linked_card"] == masked_card(ALICE.card)
    assert summary["realname"] == masked_id(ALICE)
    assert summary["autodebit"] is False
    assert summary["wallet_no"].count("*") == 4
    profile = ok(invoke("account", {"action": "profile"}, ALICE.openid))
    assert profile["realname_verified"] is True
    assert profile["wallet"] == summary
    assert svc.db[realname.TICKETS].count_documents({}) == 0  # the ticket is spent


def test_card_method_refuses_a_card_of_another_bank(svc: Services, world: SimpleNamespace) -> None:
    reply = start(ALICE, "card", OTHER_BANK_CARD)

    assert refused(reply) == "NOT_ICBC_CARD"
    assert reply["error"]["message"]
    assert sandbox_outbox(svc.db, ALICE.bank_phone) == []
    assert svc.db[realname.TICKETS].count_documents({}) == 0
    assert refused(wallet_of(ALICE)) == "REALNAME_REQUIRED"


def test_wallet_method_opens_an_e_wallet_linked_to_another_banks_card(
    svc: Services, world: SimpleNamespace
) -> None:
    summary = verify(svc, ALICE, "wallet")

    assert summary["wallet_class"] == "II"
    assert summary["linked_card"] == masked_card(OTHER_BANK_CARD)
    assert account_doc(svc, ALICE)["realname"]["method"] == "wallet"
    assert ok(wallet_of(ALICE))["balance_fen"] == OPENING_BALANCE_FEN


def test_wrong_bank_code_is_code_invalid_and_the_right_one_still_works(
    svc: Services, world: SimpleNamespace
) -> None:
    ticket = ok(start(ALICE))["ticket"]
    code = bank_code(svc, ALICE)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"

    assert refused(confirm(ALICE, ticket, wrong)) == "CODE_INVALID"
    assert not account_doc(svc, ALICE)["realname_verified"]
    assert ok(confirm(ALICE, ticket, code))["wallet_class"] == "I"


def test_bank_code_is_burnt_after_five_wrong_tries(svc: Services, world: SimpleNamespace) -> None:
    ticket = ok(start(ALICE))["ticket"]
    code = bank_code(svc, ALICE)
    for n in range(1, 6):
        assert refused(confirm(ALICE, ticket, f"{(int(code) + n) % 1_000_000:06d}")) == (
            "CODE_INVALID"
        )

    assert refused(confirm(ALICE, ticket, code)) == "CODE_INVALID"
    assert not account_doc(svc, ALICE)["realname_verified"]


def test_someone_elses_ticket_cannot_be_confirmed(svc: Services, world: SimpleNamespace) -> None:
    ticket = ok(start(ALICE))["ticket"]
    code = bank_code(svc, ALICE)

    assert refused(confirm(ERIN, ticket, code)) == "NOT_FOUND"
    assert not account_doc(svc, ERIN)["realname_verified"]
    assert ok(confirm(ALICE, ticket, code))["wallet_class"] == "I"


def test_verified_account_cannot_start_again(svc: Services, world: SimpleNamespace) -> None:
    verify(svc, ALICE)

    assert refused(start(ALICE)) == "CONFLICT"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id_number", ALICE.id_number[:17] + ("0" if ALICE.id_number[17] != "0" else "1")),
        ("id_number", "44030519900101013"),
        ("card_no", ALICE.card[:-1] + str((int(ALICE.card[-1]) + 1) % 10)),
        ("card_no", "6222-0200-0012-3450"),
        ("bank_phone", "12345678901"),
        ("method", "cash"),
    ],
    ids=["id-check-char", "id-too-short", "card-luhn", "card-not-digits", "phone", "method"],
)
def test_invalid_details_are_refused_naming_the_field_before_the_bank_is_asked(
    svc: Services, world: SimpleNamespace, field: str, value: str
) -> None:
    reply = start(ALICE, **{field: value})

    assert refused(reply) == "INVALID_ARGUMENT"
    assert list(reply["error"]["details"]["fields"]) == [field]
    assert sandbox_outbox(svc.db, ALICE.bank_phone) == []
    assert value not in json.dumps(reply, ensure_ascii=False) or field == "method"


def test_lowercase_x_check_character_is_accepted(svc: Services, world: SimpleNamespace) -> None:
    first17 = next(
        f"4403051990010{n:04d}"
        for n in range(10_000)
        if with_id_check(f"4403051990010{n:04d}").endswith("X")
    )
    who = SimpleNamespace(**{**vars(NOBODY), "id_number": with_id_check(first17).lower()})

    assert ok(start(who))["ticket"]


def test_agreements_are_required_and_recorded_with_version_and_time(
    svc: Services, world: SimpleNamespace
) -> None:
    ticket = ok(start(ALICE))["ticket"]
    code = bank_code(svc, ALICE)

    missing = confirm(ALICE, ticket, code, ["privacy"])
    no_consent_text = confirm(ALICE, ticket, code, ["wallet_service", "privacy"], autodebit=True)
    assert refused(missing) == "INVALID_ARGUMENT"
    assert missing["error"]["details"]["fields"] == {
        "agreements.wallet_service": "须同意《工银e钱包服务协议》"
    }
    assert refused(no_consent_text) == "INVALID_ARGUMENT"
    assert not account_doc(svc, ALICE)["realname_verified"]

    ok(confirm(ALICE, ticket, code, ALL_AGREEMENTS, autodebit=True))

    doc = account_doc(svc, ALICE)
    signed = {a["name"]: a for a in doc["agreements"]}
    assert set(signed) == {"wallet_service", "privacy", "autodebit"}
    for name, agreement in signed.items():
        assert agreement["version"] == appconfig.DEFAULTS.agreement(name).version
        assert agreement["signed_at"] is not None
    assert doc["autodebit"]["enabled"] is True
    assert doc["autodebit"]["version"] == appconfig.DEFAULTS.agreement("autodebit").version
    assert doc["autodebit"]["changed_at"] is not None
    assert doc["autodebit"]["agreement_no"]
    at_bank = svc.db["sandbox_icbc_agreements"].find_one({"_id": doc["autodebit"]["agreement_no"]})
    assert at_bank["status"] == "active"
    assert at_bank["wallet_no"] == doc["wallet"]["wallet_no"]


# ------------------------------------------------------------------------------ personal data


class LogLines(logging.Handler):
    """Collects the structured log lines the functions write."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    collector = LogLines()
    logger = logging.getLogger("caiyun")
    logger.addHandler(collector)
    yield collector
    logger.removeHandler(collector)


def test_id_and_card_numbers_are_unreadable_at_rest_and_masked_in_every_reply(
    svc: Services, world: SimpleNamespace, log_lines: LogLines
) -> None:
    secrets_ = [ALICE.id_number, ALICE.card]
    replies = [start(ALICE)]
    ticket = replies[0]["data"]["ticket"]

    def stored() -> str:
        documents = {
            name: list(svc.db[name].find({}))
            for name in svc.db.list_collection_names()
            if not name.startswith("sandbox_")  # the bank's own books
        }
        return json.dumps(documents, default=str, ensure_ascii=False)

    pending = stored()
    assert svc.db[realname.TICKETS].count_documents({}) == 1
    replies.append(confirm(ALICE, ticket, bank_code(svc, ALICE), ALL_AGREEMENTS, True))
    done = stored()
    replies += [
        invoke("account", {"action": "profile"}, ALICE.openid),
        wallet_of(ALICE),
        transactions(ALICE, 1, 20),
        set_autodebit(ALICE, False),
    ]
    logged = "\n".join(log_lines.lines)
    assert "realname_confirm" in logged  # the calls were logged

    for plain in secrets_:
        assert plain not in pending
        assert plain not in done
        assert plain not in logged
        for reply in replies:
            assert reply["ok"] is True, reply
            assert plain not in json.dumps(reply, ensure_ascii=False)
    doc = account_doc(svc, ALICE)
    assert doc["realname"]["id_number"].startswith("v1:")
    assert doc["wallet"]["linked_card"].startswith("v1:")
    for reply in replies[1:3]:
        text = json.dumps(reply, ensure_ascii=False)
        assert masked_id(ALICE) in text
        assert masked_card(ALICE.card) in text


# ------------------------------------------------------------------------------ wallet


def test_wallet_needs_real_name_verification(svc: Services, world: SimpleNamespace) -> None:
    assert refused(wallet_of(ALICE)) == "REALNAME_REQUIRED"
    assert refused(transactions(ALICE, 1, 20)) == "REALNAME_REQUIRED"
    assert refused(set_autodebit(ALICE, True)) == "REALNAME_REQUIRED"


def test_wallet_shows_the_balance_icbc_reports(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    assert ok(wallet_of(ALICE))["balance_fen"] == OPENING_BALANCE_FEN

    bank.set_balance(wallet_no(svc, ALICE), 12345)
    wallet = ok(wallet_of(ALICE))

    assert wallet["balance_fen"] == 12345
    assert wallet["wallet_class"] == "I"
    assert wallet["linked_card"] == masked_card(ALICE.card)
    assert wallet["autodebit"] is False


def test_the_agreements_required_and_their_versions_follow_the_configuration(
    svc: Services, world: SimpleNamespace
) -> None:
    edits = [
        {
            "code": a.code,
            "title": a.title,
            "text": "隐私政策第二版" if a.code == "privacy" else a.text,
            # The property company requires the privacy policy only of e-wallet openers now.
            "required_when": ["wallet"] if a.code == "privacy" else list(a.required_when),
        }
        for a in appconfig.DEFAULT_AGREEMENTS
    ]
    hq = {"_id": "hq-admin", "role": "admin", "all_communities": True}
    appconfig.update(svc, hq, {"agreements": edits}, None)
    ticket = ok(start(ALICE))["ticket"]

    ok(confirm(ALICE, ticket, bank_code(svc, ALICE), ["wallet_service"]))
    ticket = ok(start(BOB, "wallet", OTHER_BANK_CARD))["ticket"]
    missing = confirm(BOB, ticket, bank_code(svc, BOB), ["wallet_service"])
    ok(confirm(BOB, ticket, bank_code(svc, BOB), ["wallet_service", "privacy"]))

    assert missing["error"]["details"] == {"fields": {"agreements.privacy": "须同意《隐私政策》"}}
    signed = {a["name"]: a["version"] for a in account_doc(svc, BOB)["agreements"]}
    assert signed == {"wallet_service": "2026.1", "privacy": "2026.2"}
    text = svc.db[appconfig.AGREEMENT_TEXTS].find_one({"_id": "privacy@2026.2"})
    assert text["text"] == "隐私政策第二版"  # what BOB signed can be shown again


def test_set_autodebit_signs_and_cancels_the_icbc_agreement(
    svc: Services, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)

    on = ok(set_autodebit(ALICE, True))
    agreement_no = account_doc(svc, ALICE)["autodebit"]["agreement_no"]
    again = ok(set_autodebit(ALICE, True))
    off = ok(set_autodebit(ALICE, False))

    assert on["autodebit"] is True and again["autodebit"] is True
    assert off["autodebit"] is False
    assert ok(wallet_of(ALICE))["autodebit"] is False
    doc = account_doc(svc, ALICE)
    assert doc["autodebit"]["enabled"] is False
    assert doc["autodebit"]["agreement_no"] is None
    assert doc["autodebit"]["version"] == appconfig.DEFAULTS.agreement("autodebit").version
    at_bank = svc.db["sandbox_icbc_agreements"].find_one({"_id": agreement_no})
    assert at_bank["status"] == "cancelled"
    assert svc.db["sandbox_icbc_agreements"].count_documents({}) == 1  # asked again: no new one


# ------------------------------------------------------------------------------ auto-debit


def import_due_bills(
    svc: Services, world: SimpleNamespace, *rows: tuple[int, str, int, int]
) -> None:
    """Bills as ``(room, item, amount_fen, days until due)``."""
    today = business_date(svc.clock.now())
    event = {
        "action": "import_bills",
        "community_id": world.garden,
        "rows": [
            {
                "building": 1,
                "unit": 1,
                "room": room,
                "period": "2026-11",
                "item": item,
                "amount_fen": amount,
                "due_date": (today + timedelta(days=days)).isoformat(),
            }
            for room, item, amount, days in rows
        ],
    }
    ok(invoke("admin", event, ADMIN))


def bill_by_item(svc: Services, house: dict[str, Any], item: str) -> dict[str, Any]:
    return svc.db["bills"].find_one({"house_id": house["_id"], "item": item})


def test_autodebit_charges_a_consenting_accounts_due_bills(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    import_due_bills(svc, world, (101, "物业费", 12000, -1), (101, "停车费", 5000, 0))
    import_due_bills(svc, world, (101, "水费", 3000, 5), (102, "物业费", 15000, -1))
    verify(svc, ALICE, autodebit=True)
    verify(svc, BOB)  # verified, but no 代扣 consent

    counts = payments.run_autodebit(svc)

    assert counts == {"autodebit_accounts": 1, "autodebit_paid": 1, "autodebit_failed": 0}
    assert bill_by_item(svc, world.h101, "物业费")["status"] == "paid"
    assert bill_by_item(svc, world.h101, "停车费")["status"] == "paid"
    assert bill_by_item(svc, world.h101, "水费")["status"] == "unpaid"  # not due yet
    assert bill_by_item(svc, world.h102, "物业费")["status"] == "unpaid"  # BOB never consented
    assert ok(wallet_of(ALICE))["balance_fen"] == OPENING_BALANCE_FEN - 17000
    order = svc.db[payments.ORDERS].find_one({"method": "autodebit"})
    assert order["status"] == "paid" and order["amount_fen"] == 17000
    assert svc.db[payments.TRANSACTIONS].count_documents({"order_no": order["_id"]}) == 1
    assert len(messages(ALICE, "payment")) == 1
    assert ok(list_bills(ALICE))["unpaid_total_fen"] == 3000


def test_autodebit_runs_once_a_day(svc: Services, bank: FakeIcbc, world: SimpleNamespace) -> None:
    import_due_bills(svc, world, (101, "物业费", 12000, -1))
    verify(svc, ALICE, autodebit=True)
    bank.set_balance(wallet_no(svc, ALICE), 100)  # not enough: ICBC declines

    first = payments.run_autodebit(svc)
    second = payments.run_autodebit(svc)

    assert first == {"autodebit_accounts": 1, "autodebit_paid": 0, "autodebit_failed": 1}
    assert second["autodebit_accounts"] == 0  # not charged twice the same day
    assert bill_by_item(svc, world.h101, "物业费")["status"] == "unpaid"
    assert svc.db[payments.ORDERS].count_documents({}) == 1
    assert svc.db[payments.ORDERS].find_one({})["status"] == "failed"
    assert ok(wallet_of(ALICE))["balance_fen"] == 100

    bank.set_balance(wallet_no(svc, ALICE), 50_000)
    svc.clock.advance(24 * 3600)
    third = payments.run_autodebit(svc)
    fourth = payments.run_autodebit(svc)

    assert third == {"autodebit_accounts": 1, "autodebit_paid": 1, "autodebit_failed": 0}
    assert fourth["autodebit_accounts"] == 0
    assert bill_by_item(svc, world.h101, "物业费")["status"] == "paid"
    assert ok(wallet_of(ALICE))["balance_fen"] == 50_000 - 12000


def test_autodebit_skips_bills_the_resident_is_paying(
    svc: Services, world: SimpleNamespace
) -> None:
    import_due_bills(svc, world, (101, "物业费", 12000, -1))
    verify(svc, ALICE, autodebit=True)
    bill = bill_by_item(svc, world.h101, "物业费")
    order = ok(pay(ALICE, bill["_id"]))

    counts = payments.run_autodebit(svc)

    assert counts["autodebit_paid"] == 0
    assert ok(wallet_of(ALICE))["balance_fen"] == OPENING_BALANCE_FEN
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "pending"


def test_autodebit_stops_after_consent_is_withdrawn(svc: Services, world: SimpleNamespace) -> None:
    import_due_bills(svc, world, (101, "物业费", 12000, -1))
    verify(svc, ALICE, autodebit=True)
    ok(set_autodebit(ALICE, False))

    counts = payments.run_autodebit(svc)

    assert counts["autodebit_accounts"] == 0
    assert bill_by_item(svc, world.h101, "物业费")["status"] == "unpaid"
    assert ok(wallet_of(ALICE))["balance_fen"] == OPENING_BALANCE_FEN


def test_wallet_transactions_page_through_icbcs_details(
    svc: Services, world: SimpleNamespace
) -> None:
    import_due_bills(svc, world, (101, "物业费", 12000, -1))
    verify(svc, ALICE, autodebit=True)
    payments.run_autodebit(svc)  # one charge on top of the opening deposit
    import_due_bills(svc, world, (101, "停车费", 5000, 0))
    svc.clock.advance(24 * 3600)
    payments.run_autodebit(svc)  # and a second one the next day

    first = ok(transactions(ALICE, 1, 2))
    second = ok(transactions(ALICE, 2, 2))
    beyond = ok(transactions(ALICE, 3, 2))

    assert (first["total"], first["page"], first["page_size"]) == (3, 1, 2)
    assert [t["direction"] for t in first["items"]] == ["out", "out"]
    assert [t["amount_fen"] for t in first["items"]] == [5000, 12000]  # newest first
    assert first["items"][0]["balance_fen"] == OPENING_BALANCE_FEN - 17000
    assert [(t["direction"], t["amount_fen"]) for t in second["items"]] == [
        ("in", OPENING_BALANCE_FEN)
    ]
    assert beyond["items"] == [] and beyond["total"] == 3
    assert all(t["occurred_at"].endswith("+08:00") for t in first["items"])
    too_big = transactions(ALICE, 1, 101)
    assert refused(too_big) == "INVALID_ARGUMENT"


def test_a_second_pending_ticket_cannot_replace_a_verified_identity(
    svc: Services, world: SimpleNamespace
) -> None:
    """``realname_start`` refuses a verified account; a ticket started before verification
    finished must not get around that and swap the identity, wallet and 代扣 agreement."""
    first = ok(start(ALICE))["ticket"]
    first_code = bank_code(svc, ALICE)
    someone = {
        "name": NOBODY.name,
        "id_number": NOBODY.id_number,
        "card_no": NOBODY.card,
        "bank_phone": NOBODY.bank_phone,
    }
    second = ok(start(ALICE, **someone))["ticket"]
    second_code = sandbox_outbox(svc.db, NOBODY.bank_phone)[0]["code"]
    ok(confirm(ALICE, first, first_code, ALL_AGREEMENTS, autodebit=True))
    verified = account_doc(svc, ALICE)

    reply = confirm(ALICE, second, second_code)

    assert refused(reply) == "CONFLICT"
    after = account_doc(svc, ALICE)
    assert after["realname"]["id_masked"] == masked_id(ALICE)
    assert after["wallet"]["wallet_no"] == verified["wallet"]["wallet_no"]
    assert after["autodebit"] == verified["autodebit"]
