"""Real-name verification through ICBC's JFT opening, the ICBC account it leaves, the auto-debit
(代扣) agreement and the daily auto-debit run: the account function against the real ICBC client
and the ICBC sandbox (AES-encrypted requests, real RSA both ways)."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import pytest
from billing import (
    ADMIN,
    ALICE,
    BOB,
    ERIN,
    NOBODY,
    NOTIFY_URL,
    card_number,
    charges,
    get_order,
    list_bills,
    messages,
    move_in,
    pay,
    post_notify,
    realname_details,
    reply_of,
    sign_autodebit,
    verify,
    wire,
    with_id_check,
)
from conftest import invoke
from worlds import GARDEN, ok, owner_row, refused, staff_account

from caiyun.adapters.sms import sandbox_outbox
from caiyun.clock import business_date
from caiyun.domain import appconfig, autodebit_charges, job_runs, realname
from caiyun.domain.owner_import import import_owners
from caiyun.sandbox.icbc import FakeIcbc
from caiyun.sandbox.icbc_bank import OPENING_BALANCE_FEN
from caiyun.services import Services
from caiyun.stores import accounts
from caiyun.stores import houses as house_store
from caiyun.stores.orders import ORDERS

OTHER_BANK_CARD = card_number("6228480000")  # Agricultural Bank, not ICBC


@pytest.fixture
def world(svc: Services) -> SimpleNamespace:
    """彩云花园 with ALICE and ERIN in 1栋-101, BOB in 1栋-102, NOBODY homeless, and its admin."""
    db, now = svc.db, svc.clock.now()
    rows = [owner_row(101, ALICE.name, ALICE.phone), owner_row(102, BOB.name, BOB.phone)]
    garden = import_owners(svc, GARDEN, rows)
    h101, h102 = (house_store.get(db, r.house_id) for r in garden.rows)
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


def start(who: SimpleNamespace, method: str = "card", **changes: Any) -> dict[str, Any]:
    return invoke("account", realname_details(who, method, **changes), who.openid)


def bank_code(svc: Services, phone: str) -> str:
    return sandbox_outbox(svc.db, phone)[0]["code"]


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


def account_doc(svc: Services, who: SimpleNamespace) -> dict[str, Any]:
    return svc.db[accounts.ACCOUNTS].find_one({"phone": who.phone})


def wallet_of(who: SimpleNamespace) -> dict[str, Any]:
    return invoke("account", {"action": "wallet"}, who.openid)


def set_autodebit(who: SimpleNamespace, enabled: bool, **signing: Any) -> dict[str, Any]:
    event = {"action": "set_autodebit", "enabled": enabled, **signing}
    return invoke("account", event, who.openid)


def transactions(who: SimpleNamespace, page: int, page_size: int) -> dict[str, Any]:
    event = {"action": "wallet_transactions", "page": page, "page_size": page_size}
    return invoke("account", event, who.openid)


def masked_id(who: SimpleNamespace) -> str:
    return who.id_number[:4] + "*" * 10 + who.id_number[-4:]


def masked_card(card: str) -> str:
    return f"{card[:4]}********{card[-4:]}"


# ------------------------------------------------------------------------------ verification


def test_a_class_i_card_holder_verifies_with_the_card_and_gets_no_wallet_number(
    svc: Services, world: SimpleNamespace
) -> None:
    ticket = ok(start(ALICE))["ticket"]
    texts = sandbox_outbox(svc.db, ALICE.bank_phone)
    assert len(texts) == 1 and texts[0]["code"]
    assert not account_doc(svc, ALICE)["realname_verified"]

    result = ok(confirm(ALICE, ticket, texts[0]["code"]))

    assert result["status"] == "verified" and result["autodebit_ticket"] is None
    summary = result["wallet"]
    assert summary["account_kind"] == "card"
    assert summary["wallet_no"] is None
    assert summary["wallet_class"] == "I"
    assert summary["linked_card"] == masked_card(ALICE.card)
    assert summary["realname"] == ALICE.name
    assert summary["id_number_masked"] == masked_id(ALICE)
    assert summary["autodebit"] is False
    profile = ok(invoke("account", {"action": "profile"}, ALICE.openid))
    assert profile["realname_verified"] is True
    assert profile["wallet"] == summary
    assert svc.db[realname.TICKETS].count_documents({}) == 0  # the ticket is spent


def test_card_method_refuses_a_card_of_another_bank(svc: Services, world: SimpleNamespace) -> None:
    reply = start(ALICE, card_no=OTHER_BANK_CARD)

    assert refused(reply) == "NOT_ICBC_CARD"
    assert reply["error"]["message"]
    assert sandbox_outbox(svc.db, ALICE.bank_phone) == []
    assert svc.db[realname.TICKETS].count_documents({}) == 0
    assert refused(wallet_of(ALICE)) == "REALNAME_REQUIRED"


@pytest.mark.parametrize("wallet_class", ["II", "III"])
def test_the_resident_chooses_the_class_of_a_new_e_wallet_and_sees_its_number(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace, wallet_class: str
) -> None:
    summary = verify(svc, ALICE, "wallet", card_no=OTHER_BANK_CARD, wallet_class=wallet_class)

    assert summary["account_kind"] == "wallet"
    assert summary["wallet_class"] == wallet_class
    assert summary["linked_card"] == masked_card(OTHER_BANK_CARD)
    # The owner sees the wallet number in full; it is the account the bank keeps.
    assert len(summary["wallet_no"]) == 19 and summary["wallet_no"].isdigit()
    assert bank.balance(summary["wallet_no"]) == OPENING_BALANCE_FEN
    assert account_doc(svc, ALICE)["realname"]["method"] == "wallet"
    assert ok(wallet_of(ALICE))["balance_fen"] == OPENING_BALANCE_FEN


def test_a_wallet_needs_its_class_and_a_card_verification_takes_none(
    svc: Services, world: SimpleNamespace
) -> None:
    no_class = start(ALICE, "wallet", card_no=OTHER_BANK_CARD, wallet_class=None)
    card_with_class = start(ALICE, "card", wallet_class="II")

    assert refused(no_class) == "INVALID_ARGUMENT"
    assert refused(card_with_class) == "INVALID_ARGUMENT"
    assert sandbox_outbox(svc.db, ALICE.bank_phone) == []


def test_the_verified_name_must_be_the_name_the_property_recorded(
    svc: Services, world: SimpleNamespace
) -> None:
    """An account imported as 刘洋 cannot be verified as 张三."""
    svc.db[accounts.ACCOUNTS].update_one({"phone": ALICE.phone}, {"$set": {"name": "刘洋"}})

    reply = start(ALICE, name="张三")

    assert refused(reply) == "INVALID_ARGUMENT"
    assert list(reply["error"]["details"]["fields"]) == ["name"]
    assert sandbox_outbox(svc.db, ALICE.bank_phone) == []
    assert ok(start(ALICE, name=" 刘 洋 "))["ticket"]  # spacing is not a different name


def test_an_account_without_a_recorded_name_verifies_with_its_own(
    svc: Services, world: SimpleNamespace
) -> None:
    svc.db[accounts.ACCOUNTS].update_one({"phone": NOBODY.phone}, {"$unset": {"name": ""}})

    summary = verify(svc, NOBODY)

    assert summary["realname"] == NOBODY.name


def test_wrong_bank_code_is_code_invalid_and_the_right_one_still_works(
    svc: Services, world: SimpleNamespace
) -> None:
    ticket = ok(start(ALICE))["ticket"]
    code = bank_code(svc, ALICE.bank_phone)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"

    assert refused(confirm(ALICE, ticket, wrong)) == "CODE_INVALID"
    assert not account_doc(svc, ALICE)["realname_verified"]
    assert ok(confirm(ALICE, ticket, code))["status"] == "verified"


def test_the_bank_texts_the_code_again_and_only_the_new_one_works(
    svc: Services, world: SimpleNamespace
) -> None:
    ticket = ok(start(ALICE))["ticket"]
    old = bank_code(svc, ALICE.bank_phone)

    again = invoke("account", {"action": "realname_resend", "ticket": ticket}, ALICE.openid)

    assert ok(again)["ticket"] == ticket
    texts = sandbox_outbox(svc.db, ALICE.bank_phone)
    assert len(texts) == 2
    new = texts[0]["code"]
    if new != old:
        assert refused(confirm(ALICE, ticket, old)) == "CODE_INVALID"
    assert ok(confirm(ALICE, ticket, new))["status"] == "verified"


def test_bank_code_is_burnt_after_five_wrong_tries(svc: Services, world: SimpleNamespace) -> None:
    ticket = ok(start(ALICE))["ticket"]
    code = bank_code(svc, ALICE.bank_phone)
    for n in range(1, 6):
        assert refused(confirm(ALICE, ticket, f"{(int(code) + n) % 1_000_000:06d}")) == (
            "CODE_INVALID"
        )

    assert refused(confirm(ALICE, ticket, code)) == "CODE_INVALID"
    assert not account_doc(svc, ALICE)["realname_verified"]


def test_someone_elses_ticket_cannot_be_confirmed(svc: Services, world: SimpleNamespace) -> None:
    ticket = ok(start(ALICE))["ticket"]
    code = bank_code(svc, ALICE.bank_phone)

    assert refused(confirm(ERIN, ticket, code)) == "NOT_FOUND"
    assert refused(invoke("account", {"action": "realname_resend", "ticket": ticket}, ERIN.openid))
    assert not account_doc(svc, ERIN)["realname_verified"]
    assert ok(confirm(ALICE, ticket, code))["status"] == "verified"


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
        ("occupation", 14),
        ("id_valid_until", "2030-02-30"),
        ("wallet_class", "I"),
    ],
    ids=[
        "id-check-char",
        "id-too-short",
        "card-luhn",
        "card-not-digits",
        "phone",
        "method",
        "occupation",
        "id-validity",
        "wallet-class",
    ],
)
def test_invalid_details_are_refused_naming_the_field_before_the_bank_is_asked(
    svc: Services, world: SimpleNamespace, field: str, value: Any
) -> None:
    method = "wallet" if field == "wallet_class" else "card"
    event = {**realname_details(ALICE, method), field: value}
    reply = invoke("account", event, ALICE.openid)

    assert refused(reply) == "INVALID_ARGUMENT"
    assert list(reply["error"]["details"]["fields"]) == [field]
    assert sandbox_outbox(svc.db, ALICE.bank_phone) == []
    assert str(value) not in json.dumps(reply, ensure_ascii=False) or field in (
        "method",
        "occupation",
        "wallet_class",
    )


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
    code = bank_code(svc, ALICE.bank_phone)

    missing = confirm(ALICE, ticket, code, ["privacy"])
    assert refused(missing) == "INVALID_ARGUMENT"
    assert missing["error"]["details"]["fields"] == {
        "agreements.wallet_service": "须同意《工银e钱包服务协议》"
    }
    assert not account_doc(svc, ALICE)["realname_verified"]

    ok(confirm(ALICE, ticket, code))

    doc = account_doc(svc, ALICE)
    signed = {a["name"]: a for a in doc["agreements"]}
    assert set(signed) == {"wallet_service", "privacy"}
    for name, agreement in signed.items():
        assert agreement["version"] == appconfig.DEFAULTS.agreement(name).version
        assert agreement["signed_at"] is not None
    assert doc["autodebit"]["enabled"] is False  # nothing signed for 代扣


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

    ok(confirm(ALICE, ticket, bank_code(svc, ALICE.bank_phone), ["wallet_service"]))
    ticket = ok(start(BOB, "wallet", card_no=OTHER_BANK_CARD))["ticket"]
    code = bank_code(svc, BOB.bank_phone)
    missing = confirm(BOB, ticket, code, ["wallet_service"])
    ok(confirm(BOB, ticket, code, ["wallet_service", "privacy"]))

    assert missing["error"]["details"] == {"fields": {"agreements.privacy": "须同意《隐私政策》"}}
    assert {a["name"] for a in account_doc(svc, ALICE)["agreements"]} == {"wallet_service"}
    signed = {a["name"]: a["version"] for a in account_doc(svc, BOB)["agreements"]}
    assert signed == {"wallet_service": "2026.1", "privacy": "2026.2"}
    text = svc.db[appconfig.AGREEMENT_TEXTS].find_one({"_id": "privacy@2026.2"})
    assert text["text"] == "隐私政策第二版"  # what BOB signed can be shown again


# ------------------------------------------------------------------------------ ICBC's notify


def test_an_opening_icbc_finishes_later_is_completed_by_its_encrypted_notify(
    services: Services, keys: dict[str, str], world: SimpleNamespace
) -> None:
    bank = FakeIcbc(
        services.db,
        services.clock,
        gateway_private_key=keys["gateway"],
        merchant_private_key=keys["merchant"],
        openings_pending=True,
    )
    bank.start()
    try:
        svc = wire(services, bank)
        ticket = ok(start(ALICE, "wallet", card_no=OTHER_BANK_CARD))["ticket"]

        pending = ok(confirm(ALICE, ticket, bank_code(svc, ALICE.bank_phone)))

        assert pending == {
            "status": "pending",
            "status_name": "开户中",
            "wallet": None,
            "autodebit_ticket": None,
        }
        assert ok(invoke("account", {"action": "profile"}, ALICE.openid))["wallet"] is None
        form = bank.opening_notify(ticket, NOTIFY_URL)
        assert form["encrypt_type"] == "AES" and form["sign_type"] == "RSA"
        assert "corpSerno" not in form["biz_content"]  # encrypted on the wire
        answers = [reply_of(post_notify(urlencode(form)), bank) for _ in range(2)]
    finally:
        bank.stop()

    assert [a["return_code"] for a in answers] == [0, 0]  # a resend is acknowledged too
    profile = ok(invoke("account", {"action": "profile"}, ALICE.openid))
    assert profile["realname_verified"] is True
    assert profile["wallet"]["wallet_class"] == "II"
    assert (
        profile["wallet"]["wallet_no"]
        == bank.db["sandbox_icbc_accounts"].find_one({"account_class": "II"})["wallet_no"]
    )
    assert svc.db[realname.TICKETS].count_documents({}) == 0


def test_an_opening_icbc_refuses_later_tells_the_resident(
    services: Services, keys: dict[str, str], world: SimpleNamespace
) -> None:
    bank = FakeIcbc(
        services.db,
        services.clock,
        gateway_private_key=keys["gateway"],
        merchant_private_key=keys["merchant"],
        openings_pending=True,
    )
    bank.start()
    try:
        svc = wire(services, bank)
        ticket = ok(start(ALICE, "wallet", card_no=OTHER_BANK_CARD))["ticket"]
        ok(confirm(ALICE, ticket, bank_code(svc, ALICE.bank_phone)))
        refusal = {
            "msg_id": "1" * 27,
            "appId": bank.app_id,
            "corpSerno": ticket,
            "openStatus": "1",
            "failReason": "客户身份核验未通过",
        }
        form = bank.sign_notify(bank.paths["wallet_open"], refusal, NOTIFY_URL, encrypted=True)
        answer = reply_of(post_notify(urlencode(form)), bank)
        assert svc.db[realname.TICKETS].count_documents({}) == 0
        again = ok(start(ALICE, "wallet", card_no=OTHER_BANK_CARD))["ticket"]  # start over
    finally:
        bank.stop()

    assert answer["return_code"] == 0
    assert again != ticket
    assert account_doc(svc, ALICE)["realname_verified"] is False
    assert [m["title"] for m in messages(ALICE, "payment")] == ["实名认证未通过"]


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
    # The level is set here, not inherited from whichever test configured logging first.
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(collector)
    yield collector
    logger.removeHandler(collector)
    logger.setLevel(level)


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
    replies.append(confirm(ALICE, ticket, bank_code(svc, ALICE.bank_phone), autodebit=True))
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
    assert doc["wallet"]["card_no"].startswith("v1:")
    for reply in replies[2:4]:
        text = json.dumps(reply, ensure_ascii=False)
        assert masked_id(ALICE) in text
        assert masked_card(ALICE.card) in text


# ------------------------------------------------------------------------------ wallet


def test_wallet_needs_real_name_verification(svc: Services, world: SimpleNamespace) -> None:
    assert refused(wallet_of(ALICE)) == "REALNAME_REQUIRED"
    assert refused(transactions(ALICE, 1, 20)) == "REALNAME_REQUIRED"
    assert refused(set_autodebit(ALICE, True)) == "REALNAME_REQUIRED"
    assert refused(invoke("account", {"action": "autodebit_start"}, ALICE.openid)) == (
        "REALNAME_REQUIRED"
    )


def test_wallet_shows_the_balance_icbc_reports(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    assert ok(wallet_of(ALICE))["balance_fen"] == OPENING_BALANCE_FEN

    bank.set_balance(ALICE.card, 12345)  # a Class I holder's account is the card
    wallet = ok(wallet_of(ALICE))

    assert wallet["balance_fen"] == 12345
    assert wallet["wallet_class"] == "I"
    assert wallet["linked_card"] == masked_card(ALICE.card)
    assert wallet["autodebit"] is False


# ------------------------------------------------------------------------------ the agreement


def test_auto_debit_cannot_be_turned_on_without_signing_the_agreement(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    """A resident who declined 代扣 at real-name and never signed cannot switch it on; the
    timer takes nothing from her."""
    import_due_bills(svc, world, (101, "物业费", 26800, -1))
    verify(svc, ALICE)

    reply = set_autodebit(ALICE, True)

    assert refused(reply) == "INVALID_ARGUMENT"
    assert set(reply["error"]["details"]["fields"]) == {
        "ticket",
        "sms_code",
        "agreements.autodebit",
    }
    assert account_doc(svc, ALICE)["autodebit"]["enabled"] is False
    assert autodebit_charges.run_autodebit(svc)["autodebit_accounts"] == 0
    assert bank.balance(ALICE.card) == OPENING_BALANCE_FEN


def test_an_enabled_flag_without_a_signed_agreement_is_never_charged(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    import_due_bills(svc, world, (101, "物业费", 26800, -1))
    verify(svc, ALICE)
    # However the flag got there, only an agreement signed with ICBC's code counts.
    svc.db[accounts.ACCOUNTS].update_one(
        {"phone": ALICE.phone}, {"$set": {"autodebit": {"enabled": True, "agreement_no": "X"}}}
    )

    assert autodebit_charges.run_autodebit(svc)["autodebit_accounts"] == 0
    assert bank.balance(ALICE.card) == OPENING_BALANCE_FEN


def test_signing_the_agreement_turns_auto_debit_on_and_off_cancels_it_at_once(
    svc: Services, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    started = ok(invoke("account", {"action": "autodebit_start"}, ALICE.openid))
    assert started["agreement"]["name"] == "autodebit"
    assert started["agreement"]["version"] == appconfig.DEFAULTS.agreement("autodebit").version
    assert started["sent_to"] == ALICE.bank_phone[:3] + "****" + ALICE.bank_phone[-4:]
    code = bank_code(svc, ALICE.bank_phone)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    signing = {"ticket": started["ticket"], "agreements": ["autodebit"]}

    assert refused(set_autodebit(ALICE, True, sms_code=wrong, **signing)) == "CODE_INVALID"
    on = ok(set_autodebit(ALICE, True, sms_code=code, **signing))
    again = ok(set_autodebit(ALICE, True))  # already on: nothing to sign

    assert on["autodebit"] is True and again["autodebit"] is True
    doc = account_doc(svc, ALICE)
    agreement = doc["autodebit"]
    assert agreement["version"] == appconfig.DEFAULTS.agreement("autodebit").version
    assert agreement["signed_at"] is not None and agreement["agreement_no"]
    assert "autodebit" in {a["name"] for a in doc["agreements"]}
    at_bank = svc.db["sandbox_icbc_agreements"].find_one({"_id": agreement["agreement_id"]})
    assert at_bank["status"] == "active"
    assert at_bank["account_key"] == hashlib.sha256(ALICE.card.encode()).hexdigest()

    off = ok(set_autodebit(ALICE, False))

    assert off["autodebit"] is False
    assert ok(wallet_of(ALICE))["autodebit"] is False
    assert svc.db["sandbox_icbc_agreements"].find_one({"_id": agreement["agreement_id"]})[
        "status"
    ] == ("cancelled")
    # On again means signing again: the cancelled agreement is not reused.
    assert refused(set_autodebit(ALICE, True, sms_code=code, **signing)) == "NOT_FOUND"
    sign_autodebit(svc, ALICE)
    assert svc.db["sandbox_icbc_agreements"].count_documents({"status": "active"}) == 1


def test_auto_debit_chosen_at_real_name_starts_the_signing(
    svc: Services, world: SimpleNamespace
) -> None:
    ticket = ok(start(ALICE))["ticket"]

    result = ok(confirm(ALICE, ticket, bank_code(svc, ALICE.bank_phone), autodebit=True))

    assert result["status"] == "verified" and result["wallet"]["autodebit"] is False
    code = bank_code(svc, ALICE.bank_phone)  # the second text: the agreement's code
    signing = {"ticket": result["autodebit_ticket"], "agreements": ["autodebit"]}
    assert ok(set_autodebit(ALICE, True, sms_code=code, **signing))["autodebit"] is True


def test_off_is_immediate_even_when_icbc_cannot_cancel_yet(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    import_due_bills(svc, world, (101, "物业费", 12000, -1))
    verify(svc, ALICE)
    sign_autodebit(svc, ALICE)
    agreement_id = account_doc(svc, ALICE)["autodebit"]["agreement_id"]
    bank.fail_next("SYSTEM_BUSY", bank.paths["autodebit_agreement"])

    assert ok(set_autodebit(ALICE, False))["autodebit"] is False

    assert account_doc(svc, ALICE)["autodebit"]["cancel_pending"] is True
    assert autodebit_charges.run_autodebit(svc)["autodebit_accounts"] == 0
    ok(set_autodebit(ALICE, False))  # the next change retries the cancellation
    assert account_doc(svc, ALICE)["autodebit"]["cancel_pending"] is False
    assert svc.db["sandbox_icbc_agreements"].find_one({"_id": agreement_id})["status"] == (
        "cancelled"
    )


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
    ok(invoke("admin", event, ADMIN, "staff"))


def bill_by_item(svc: Services, house: dict[str, Any], item: str) -> dict[str, Any]:
    return svc.db["bills"].find_one({"house_id": house["_id"], "item": item})


def test_autodebit_charges_under_the_signed_agreement_and_tells_the_resident(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    import_due_bills(svc, world, (101, "物业费", 12000, -1), (101, "停车费", 5000, 0))
    import_due_bills(svc, world, (101, "水费", 3000, 5), (102, "物业费", 15000, -1))
    verify(svc, ALICE)
    sign_autodebit(svc, ALICE)
    verify(svc, BOB)  # verified, but never signed

    counts = autodebit_charges.run_autodebit(svc)

    assert counts == {"autodebit_accounts": 1, "autodebit_paid": 1, "autodebit_failed": 0}
    assert bill_by_item(svc, world.h101, "物业费")["status"] == "paid"
    assert bill_by_item(svc, world.h101, "停车费")["status"] == "paid"
    assert bill_by_item(svc, world.h101, "水费")["status"] == "unpaid"  # not due yet
    assert bill_by_item(svc, world.h102, "物业费")["status"] == "unpaid"  # BOB never signed
    assert ok(wallet_of(ALICE))["balance_fen"] == OPENING_BALANCE_FEN - 17000
    order = svc.db[ORDERS].find_one({"method": "autodebit"})
    assert order["status"] == "paid" and order["amount_fen"] == 17000
    agreement = account_doc(svc, ALICE)["autodebit"]
    assert order["consent"] == {
        "agreement_id": agreement["agreement_id"],
        "agreement_no": agreement["agreement_no"],
        "version": agreement["version"],
        "signed_at": agreement["signed_at"],
    }
    assert charges(svc, order["_id"]) == 1
    told = messages(ALICE, "payment")
    assert [m["title"] for m in told] == ["自动扣缴成功"]
    assert (
        "170.00" in told[0]["body"]
        and appconfig.DEFAULTS.agreement("autodebit").version in told[0]["body"]
    )
    assert ok(list_bills(ALICE))["unpaid_total_fen"] == 3000


def test_autodebit_runs_once_a_day_and_a_decline_is_told(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    import_due_bills(svc, world, (101, "物业费", 12000, -1))
    verify(svc, ALICE)
    sign_autodebit(svc, ALICE)
    bank.set_balance(ALICE.card, 100)  # not enough: ICBC declines

    first = autodebit_charges.run_autodebit(svc)
    second = autodebit_charges.run_autodebit(svc)

    assert first == {"autodebit_accounts": 1, "autodebit_paid": 0, "autodebit_failed": 1}
    assert second["autodebit_accounts"] == 0  # not charged twice the same day
    assert bill_by_item(svc, world.h101, "物业费")["status"] == "unpaid"
    assert svc.db[ORDERS].count_documents({}) == 1
    assert svc.db[ORDERS].find_one({})["status"] == "failed"
    assert ok(wallet_of(ALICE))["balance_fen"] == 100
    assert [m["title"] for m in messages(ALICE, "payment")] == ["自动扣缴未成功"]

    bank.set_balance(ALICE.card, 50_000)
    svc.clock.advance(24 * 3600)
    third = autodebit_charges.run_autodebit(svc)
    fourth = autodebit_charges.run_autodebit(svc)

    assert third == {"autodebit_accounts": 1, "autodebit_paid": 1, "autodebit_failed": 0}
    assert fourth["autodebit_accounts"] == 0
    assert bill_by_item(svc, world.h101, "物业费")["status"] == "paid"
    assert ok(wallet_of(ALICE))["balance_fen"] == 50_000 - 12000


def test_autodebit_skips_bills_the_resident_is_paying(
    svc: Services, world: SimpleNamespace
) -> None:
    import_due_bills(svc, world, (101, "物业费", 12000, -1))
    verify(svc, ALICE)
    sign_autodebit(svc, ALICE)
    bill = bill_by_item(svc, world.h101, "物业费")
    order = ok(pay(ALICE, bill["_id"]))

    counts = autodebit_charges.run_autodebit(svc)

    assert counts["autodebit_paid"] == 0
    assert ok(wallet_of(ALICE))["balance_fen"] == OPENING_BALANCE_FEN
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "pending"


def test_autodebit_stops_after_consent_is_withdrawn(svc: Services, world: SimpleNamespace) -> None:
    import_due_bills(svc, world, (101, "物业费", 12000, -1))
    verify(svc, ALICE)
    sign_autodebit(svc, ALICE)
    ok(set_autodebit(ALICE, False))

    counts = autodebit_charges.run_autodebit(svc)

    assert counts["autodebit_accounts"] == 0
    assert bill_by_item(svc, world.h101, "物业费")["status"] == "unpaid"
    assert ok(wallet_of(ALICE))["balance_fen"] == OPENING_BALANCE_FEN


def test_wallet_transactions_page_through_icbcs_details(
    svc: Services, world: SimpleNamespace
) -> None:
    import_due_bills(svc, world, (101, "物业费", 12000, -1))
    verify(svc, ALICE)
    sign_autodebit(svc, ALICE)
    autodebit_charges.run_autodebit(svc)  # one charge on top of the opening deposit
    import_due_bills(svc, world, (101, "停车费", 5000, 0))
    svc.clock.advance(24 * 3600)
    autodebit_charges.run_autodebit(svc)  # and a second one the next day

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
    svc.db[accounts.ACCOUNTS].update_one({"phone": ALICE.phone}, {"$unset": {"name": ""}})
    first = ok(start(ALICE))["ticket"]
    first_code = bank_code(svc, ALICE.bank_phone)
    someone = {
        "name": NOBODY.name,
        "id_number": NOBODY.id_number,
        "card_no": NOBODY.card,
        "bank_phone": NOBODY.bank_phone,
    }
    second = ok(start(ALICE, **someone))["ticket"]
    second_code = bank_code(svc, NOBODY.bank_phone)
    ok(confirm(ALICE, first, first_code))
    sign_autodebit(svc, ALICE)
    verified = account_doc(svc, ALICE)

    reply = confirm(ALICE, second, second_code)

    assert refused(reply) == "CONFLICT"
    after = account_doc(svc, ALICE)
    assert after["realname"]["id_masked"] == masked_id(ALICE)
    assert after["wallet"] == verified["wallet"]
    assert after["autodebit"] == verified["autodebit"]


def test_autodebit_cut_short_by_the_budget_resumes_and_charges_each_account_once(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    import_due_bills(svc, world, (101, "物业费", 12000, -1), (102, "物业费", 15000, -1))
    for who in (ALICE, BOB):
        verify(svc, who)
        sign_autodebit(svc, who)
    spent = svc.clock.now()  # the budget is over before the first batch ends

    runs = [autodebit_charges.run_autodebit(svc, until=spent, batch_size=1) for _ in range(4)]

    assert [r.get("unfinished", 0) for r in runs] == [1, 1, 0, 0]
    assert [r["autodebit_paid"] for r in runs] == [1, 1, 0, 0]
    assert bill_by_item(svc, world.h101, "物业费")["status"] == "paid"
    assert bill_by_item(svc, world.h102, "物业费")["status"] == "paid"
    assert svc.db[ORDERS].count_documents({"method": "autodebit"}) == 2
    assert charges(svc) == 2


def test_an_autodebit_run_held_by_another_invocation_is_left_to_it(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    import_due_bills(svc, world, (101, "物业费", 12000, -1))
    verify(svc, ALICE)
    sign_autodebit(svc, ALICE)
    today = business_date(svc.clock.now()).isoformat()
    held = job_runs.begin(svc, f"autodebit:{today}", keep_s=3600)
    assert held is not None

    assert autodebit_charges.run_autodebit(svc)["autodebit_accounts"] == 0  # the other one is at it

    svc.clock.advance(svc.settings.scheduler_budget_s + 1)  # it died: its hold lapses
    assert autodebit_charges.run_autodebit(svc)["autodebit_paid"] == 1
    assert bill_by_item(svc, world.h101, "物业费")["status"] == "paid"
