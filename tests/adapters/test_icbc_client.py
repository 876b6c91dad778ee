"""The ICBC client against the local bank, over real HTTP on loopback with real RSA and AES.

The local bank refuses what ICBC would: each request is checked against its interface's field
sheet, sign type and encryption. Tests that send something the client never would (a drift)
build and sign the request themselves, exactly as the client does.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import threading
import traceback
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests

from caiyun.adapters import icbc_sheets
from caiyun.adapters.icbc import IcbcClient
from caiyun.adapters.icbc_protocol import (
    IcbcError,
    IcbcSignatureError,
    aes_encrypt,
    icbc_time,
    public_key_pem,
    sign_params,
    verify_response,
)
from caiyun.adapters.icbc_values import (
    NotifyPayload,
    OpeningResult,
    PaymentStatus,
    Person,
    corp_serial,
)
from caiyun.adapters.sms import sandbox_outbox
from caiyun.data.embedded import EmbeddedEngine
from caiyun.errors import AppError
from caiyun.sandbox import icbc as sandbox_icbc
from caiyun.sandbox.icbc import FakeIcbc
from caiyun.sandbox.icbc_bank import OPENING_BALANCE_FEN, ORDERS
from caiyun.settings import Settings

ICBC_CARD = "6222020000000000000"  # Luhn-valid, ICBC Class I
OTHER_CARD = "6228480000000000000"  # Luhn-valid, another bank
ID_NUMBER = "11010519491231002X"  # the GB 11643 example
PHONE = "13800138000"
PERSON = Person("张三", ID_NUMBER, PHONE)
SHOP_APPID = "wx0123456789abcdef"


class ManualClock:
    """A clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.moment = datetime(2026, 3, 1, 8, 0, tzinfo=timezone.utc)

    def now(self) -> datetime:
        return self.moment

    def advance(self, seconds: float) -> None:
        self.moment += timedelta(seconds=seconds)


@pytest.fixture
def db(clock: ManualClock) -> Any:
    return EmbeddedEngine(None, clock=clock).database


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


# `keys` (ICBC's gateway key, our merchant key, a stranger's) is the fixture in billing.py.
def start_fake(db: Any, clock: ManualClock, keys: dict[str, str], **options: Any) -> FakeIcbc:
    fake = FakeIcbc(
        db,
        clock,
        gateway_private_key=keys["gateway"],
        merchant_private_key=keys["merchant"],
        **options,
    )
    fake.start()
    return fake


@pytest.fixture
def fake(db: Any, clock: ManualClock, keys: dict[str, str]) -> Iterator[FakeIcbc]:
    server = start_fake(db, clock, keys)
    yield server
    server.stop()


def client_for(fake: FakeIcbc, clock: ManualClock, **overrides: Any) -> IcbcClient:
    values = {
        **fake.settings_overrides(),
        "icbc_notify_url": "http://127.0.0.1:1/icbc/notify",
        "icbc_timeout_s": 5.0,
        "wechat_appid": SHOP_APPID,
        **overrides,
    }
    return IcbcClient(Settings(**values), clock)


@pytest.fixture
def client(fake: FakeIcbc, clock: ManualClock) -> IcbcClient:
    return client_for(fake, clock)


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def expect(code: str, call: Any) -> IcbcError:
    with pytest.raises(IcbcError) as refused:
        call()
    assert refused.value.code == code, refused.value
    return refused.value


def wechat_order(client: IcbcClient, order_no: str, amount: int, ttl: int = 900) -> dict[str, Any]:
    return client.create_wechat_payment(
        client.pay_biz(order_no, amount, "物业费", "oPayer", ttl, None)
    )


def start_opening(
    client: IcbcClient, account_class: str, card: str, person: Person = PERSON
) -> tuple[str, str]:
    serial = corp_serial(client.settings.icbc_app_id)
    send_no = client.open_account(
        serial,
        account_class,
        person,
        card,
        3,
        None,
        None,
        "device-1",  # type: ignore[arg-type]
    )
    return serial, send_no


def opened(
    client: IcbcClient, db: Any, account_class: str, card: str, person: Person = PERSON
) -> OpeningResult:
    serial, send_no = start_opening(client, account_class, card, person)
    code = sandbox_outbox(db, person.phone)[0]["code"]
    return client.confirm_opening(serial, send_no, code)


def raw_call(
    fake: FakeIcbc,
    clock: ManualClock,
    sheet: icbc_sheets.Sheet,
    biz: dict[str, Any],
    key: str,
    *,
    sign_type: str = "RSA2",
    encrypt: bool | None = None,
    msg_id: str = "m-raw",
) -> dict[str, Any]:
    """A request as the client would send it (or, with other arguments, would not), and the
    bank's verified answer."""
    encrypt = sheet.encrypted if encrypt is None else encrypt
    text = json.dumps(biz, ensure_ascii=False, separators=(",", ":"))
    form = {
        "app_id": fake.app_id,
        "msg_id": msg_id,
        "format": "json",
        "charset": "UTF-8",
        "sign_type": sign_type,
        "timestamp": icbc_time(clock.now()),
        "biz_content": aes_encrypt(text, fake.aes_key) if encrypt else text,
    }
    if encrypt:
        form["encrypt_type"] = "AES"
    path = fake.paths[sheet.name]
    form["sign"] = sign_params(path, form, key, sign_type)  # type: ignore[arg-type]
    reply = requests.post(fake.url + path, data=form, timeout=5)
    return verify_response(reply.text, fake.gateway_public_key, "SHA1", fake.aes_key)


# WeChat Pay through ICBC.


def test_a_wechat_pay_order_answers_what_wx_request_payment_needs(
    client: IcbcClient, fake: FakeIcbc, clock: ManualClock
) -> None:
    placed = wechat_order(client, "CY1", 12345)

    at_bank = fake.db[ORDERS].find_one({"_id": "CY1"})
    assert placed["order_id"] == at_bank["order_id"]
    assert placed["request_payment"] == {
        "timeStamp": str(int(clock.now().timestamp())),
        "nonceStr": placed["request_payment"]["nonceStr"],
        "package": f"prepay_id={at_bank['prepay_id']}",
        "signType": "RSA",
        "paySign": placed["request_payment"]["paySign"],
    }
    assert at_bank["expires_at"] == clock.now() + timedelta(seconds=900)
    pending = client.query_payment("CY1")
    assert pending == PaymentStatus("CY1", "pending", 12345, placed["order_id"], None)

    clock.advance(30)
    fake.settle("CY1", "success")

    paid = client.query_payment("CY1")
    assert (paid.status, paid.amount_fen, paid.transaction_id) == (
        "paid",
        12345,
        placed["order_id"],
    )
    assert paid.paid_at == clock.now()


def test_placing_the_same_order_again_is_idempotent_but_not_with_another_amount(
    client: IcbcClient,
) -> None:
    first = wechat_order(client, "CY2", 500)

    assert wechat_order(client, "CY2", 500)["order_id"] == first["order_id"]
    refused = expect("ORDER_CONFLICT", lambda: wechat_order(client, "CY2", 501))
    assert not refused.retryable


def test_unknown_order_and_an_expired_unpaid_one(client: IcbcClient, clock: ManualClock) -> None:
    expect("ORDER_NOT_FOUND", lambda: client.query_payment("CYNONE"))

    wechat_order(client, "CY3", 100, ttl=120)
    clock.advance(120)

    assert client.query_payment("CY3").status == "failed"


@pytest.mark.parametrize(
    "state",
    [
        "pending",
        "paid",
        "failed",
        "revoked",
        "revoking",
        "refunded",
        "partly_refunded",
        "refunding",
    ],
)
def test_every_documented_query_status_is_read(
    client: IcbcClient, fake: FakeIcbc, state: str
) -> None:
    wechat_order(client, "CY4", 100)
    fake.set_status("CY4", state)

    assert client.query_payment("CY4").status == state


# The local bank refuses what ICBC would.


def test_a_drift_from_the_sheet_fails_expire_time_as_a_date_time(
    client: IcbcClient, fake: FakeIcbc, clock: ManualClock, keys: dict[str, str]
) -> None:
    """What our client used to send (``expire_time`` as a date-time) is refused, naming the
    field; the client's own request passes."""
    biz = client.pay_biz("CY5", 100, "物业费", "oPayer", 900, None)
    drifted = {**biz, "expire_time": icbc_time(clock.now() + timedelta(minutes=15))}

    refused = raw_call(fake, clock, icbc_sheets.PAY, drifted, keys["merchant"], msg_id="m1")
    accepted = raw_call(fake, clock, icbc_sheets.PAY, biz, keys["merchant"], msg_id="m2")

    assert refused["return_code"] == 1003
    assert refused["return_msg"] == "expire_time: not in the seconds format"
    assert accepted["return_code"] == 0 and accepted["out_trade_no"] == "CY5"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"shop_appid": ""}, "shop_appid: required"),  # WeChat Pay needs the mini-program appid
        ({"mer_prtcl_no": None}, "mer_prtcl_no: required"),
        ({"orig_date_time": "2026-03-01 16:00:00"}, "orig_date_time: not in the local_iso format"),
        ({"pay_mode": "11"}, "pay_mode: must be one of 9/10/13"),
        ({"total_fee": 100}, "total_fee: must be a JSON string"),
        ({"wallet_no": "6212"}, "wallet_no: not a field of this interface"),
    ],
)
def test_the_bank_refuses_a_pay_order_that_breaks_its_sheet(
    client: IcbcClient,
    fake: FakeIcbc,
    clock: ManualClock,
    keys: dict[str, str],
    change: dict[str, Any],
    message: str,
) -> None:
    biz = {**client.pay_biz("CY6", 100, "物业费", "oPayer", 900, None), **change}
    biz = {k: v for k, v in biz.items() if v is not None}

    refused = raw_call(fake, clock, icbc_sheets.PAY, biz, keys["merchant"])

    assert refused["return_code"] == 1003 and message in refused["return_msg"]
    assert fake.db[ORDERS].count_documents({}) == 0


def test_the_bank_takes_only_the_sign_type_the_app_registered(
    db: Any, clock: ManualClock, keys: dict[str, str]
) -> None:
    rsa_app = start_fake(db, clock, keys, registered_sign_type="RSA")
    try:
        assert client_for(rsa_app, clock).settings.icbc_sign_type == "RSA"
        assert wechat_order(client_for(rsa_app, clock), "CY7", 100)["order_id"]
        mismatched = client_for(rsa_app, clock, icbc_sign_type="RSA2")
        refused = expect("SIGNATURE_REJECTED", lambda: wechat_order(mismatched, "CY8", 100))
    finally:
        rsa_app.stop()

    assert "sign_type must be RSA" in refused.message


def test_a_jft_interface_refuses_biz_content_in_clear_and_mistyped_fields(
    client: IcbcClient, fake: FakeIcbc, clock: ManualClock, keys: dict[str, str]
) -> None:
    query = {
        "appId": fake.app_id,
        "corpSerno": corp_serial(fake.app_id),
        "corpDate": "2026-03-01",
        "acctNo": ICBC_CARD,
    }
    clear = raw_call(
        fake, clock, icbc_sheets.WALLET_BALANCE, query, keys["merchant"], encrypt=False
    )
    assert (clear["return_code"], clear["return_msg"]) == (
        1003,
        "biz_content must be AES-encrypted",
    )

    serial = corp_serial(fake.app_id)
    biz = {
        "appId": fake.app_id,
        "corpSerno": serial,
        "bindMedium": ICBC_CARD,
        "certNo": ID_NUMBER,
        "certType": "0",  # the sample sends a number
        "custName": "张三",
        "mobileNo": PHONE,
        "notifyAddr": "https://x.example.com/icbc/notify",
        "outServiceCode": "openaccount",
        "trxAccDate": "2026-03-01",
        "trxAccTime": "16:00:00",
        "corpDate": "2026-03-01",
        "userProFlag": "01",
        "channelType": "1",  # an app: custIp, custMac and deviceId are then required
        "occupation": 3,
        "foreverFlag": 0,  # not for life: validityPeriod required
        "gender": 1,
    }
    refused = raw_call(fake, clock, icbc_sheets.WALLET_OPEN, biz, keys["merchant"], msg_id="m2")

    assert refused["return_code"] == 1003
    assert refused["return_msg"].split("; ") == [
        "certType: must be a JSON number",
        "custIp: required",
        "custMac: required",
        "deviceId: required",
        "validityPeriod: required",
    ]
    assert sandbox_outbox(db_of(fake), PHONE) == []


def db_of(fake: FakeIcbc) -> Any:
    return fake.db


@pytest.mark.parametrize(("ours", "banks"), [("compact", "dashed"), ("dashed", "compact")])
def test_the_wallet_pay_style_must_match_the_banks_and_each_style_pays(
    db: Any, clock: ManualClock, keys: dict[str, str], ours: str, banks: str
) -> None:
    """The two ICBC samples of walletorderfin disagree on dates and amounts: whichever the
    branch's gateway takes is CAIYUN_ICBC_WALLET_PAY_STYLE."""
    bank = start_fake(db, clock, keys, wallet_pay_style=banks)
    try:
        matching = client_for(bank, clock)
        account = opened(matching, db, "I", ICBC_CARD).account
        assert account is not None
        drifting = client_for(bank, clock, icbc_wallet_pay_style=ours)

        refused = expect(
            "REQUEST_INVALID",
            lambda: drifting.pay_from_account("CY9", ICBC_CARD, 12345, "物业费", "acct1"),
        )
        paid = matching.pay_from_account("CY9", ICBC_CARD, 12345, "物业费", "acct1")
    finally:
        bank.stop()

    assert "tranAmt" in refused.message and "trxAccDate" in refused.message
    assert (paid.status, paid.amount_fen) == ("paid", 12345)
    assert bank.balance(ICBC_CARD) == OPENING_BALANCE_FEN - 12345


def signed_form(
    fake: FakeIcbc, path: str, key: str, clock: ManualClock, msg_id: str
) -> dict[str, str]:
    form = {
        "app_id": fake.app_id,
        "msg_id": msg_id,
        "format": "json",
        "charset": "UTF-8",
        "sign_type": "RSA2",
        "timestamp": icbc_time(clock.now()),
        "biz_content": json.dumps(
            {"mer_id": fake.merchant_id, "out_trade_no": "CY1", "deal_flag": "0"}
            | {"icbc_appid": fake.app_id}
        ),
    }
    form["sign"] = sign_params(path, form, key, "RSA2")
    return form


def test_fake_checks_signatures_and_msg_id_reuse_over_raw_http(
    fake: FakeIcbc, clock: ManualClock, keys: dict[str, str]
) -> None:
    path = fake.paths["query"]

    def post(form: dict[str, str]) -> dict[str, Any]:
        reply = requests.post(fake.url + path, data=form, timeout=5)
        return verify_response(reply.text, fake.gateway_public_key, "SHA1")

    assert post(signed_form(fake, path, keys["stranger"], clock, "m-1"))["return_code"] == 1001
    tampered = signed_form(fake, path, keys["merchant"], clock, "m-2")
    tampered["biz_content"] = tampered["biz_content"].replace("CY1", "CY2")
    assert post(tampered)["return_code"] == 1001
    good = signed_form(fake, path, keys["merchant"], clock, "m-3")
    assert post(good)["return_code"] == 2001  # verified; the order just does not exist
    assert post(good)["return_code"] == 1004  # the same msg_id again


def test_response_algorithm_must_match_the_setting(
    db: Any, clock: ManualClock, keys: dict[str, str]
) -> None:
    sha256 = start_fake(db, clock, keys, reply_sign_alg="SHA256")
    try:
        assert sha256.settings_overrides()["icbc_response_sign_alg"] == "SHA256"
        expect("ORDER_NOT_FOUND", lambda: client_for(sha256, clock).query_payment("CY1"))
        mismatched = client_for(sha256, clock, icbc_response_sign_alg="SHA1")
        with pytest.raises(IcbcSignatureError):
            mismatched.query_payment("CY1")
    finally:
        sha256.stop()


def test_reply_from_an_impostor_gateway_is_refused(
    db: Any, clock: ManualClock, keys: dict[str, str]
) -> None:
    impostor = start_fake(db, clock, {**keys, "gateway": keys["stranger"]})
    try:
        client = client_for(
            impostor, clock, icbc_gateway_public_key=public_key_pem(keys["gateway"])
        )
        with pytest.raises(IcbcSignatureError):
            client.query_payment("CY1")
    finally:
        impostor.stop()


# Opening and verifying the account.


def test_a_class_i_card_holder_verifies_with_the_card_and_has_no_wallet_number(
    client: IcbcClient, db: Any
) -> None:
    serial, send_no = start_opening(client, "I", ICBC_CARD)

    [sms] = sandbox_outbox(db, PHONE)
    assert sms["text"].startswith("【工商银行】")
    assert sms["code"] in sms["text"] and len(sms["code"]) == 6
    result = client.confirm_opening(serial, send_no, sms["code"])
    assert result.status == "opened" and result.serial == serial
    assert result.account is not None
    assert result.account.wallet_no is None
    assert result.account.account_class == "I"
    assert result.account.bound_card_masked == "6222********0000"


@pytest.mark.parametrize("account_class", ["II", "III"])
def test_an_e_wallet_of_the_chosen_class_opens_linked_to_another_banks_card(
    client: IcbcClient, db: Any, account_class: str
) -> None:
    account = opened(client, db, account_class, OTHER_CARD).account

    assert account is not None and account.account_class == account_class
    assert account.wallet_no and account.wallet_no.startswith("6212")
    assert account.bound_card_masked == "6228********0000"
    assert client.account_balance(account.wallet_no) == OPENING_BALANCE_FEN


def test_a_card_of_another_bank_is_not_an_icbc_card_and_nothing_is_sent(
    client: IcbcClient, db: Any
) -> None:
    refused = expect("NOT_ICBC_CARD", lambda: start_opening(client, "I", OTHER_CARD))

    assert not refused.retryable
    assert sandbox_outbox(db, PHONE) == []
    # No card, ID or phone number ever lands in an error message.
    printed = "".join(traceback.format_exception(refused))
    for secret in (OTHER_CARD, ID_NUMBER, PHONE):
        assert secret not in printed


def test_bad_id_number_or_card_number_is_refused(client: IcbcClient) -> None:
    bad_id = Person("张三", "110105194912310021", PHONE)
    expect("ID_NUMBER_INVALID", lambda: start_opening(client, "I", ICBC_CARD, bad_id))
    expect("CARD_INVALID", lambda: start_opening(client, "I", "6222020000000000001"))


def test_confirm_works_only_with_the_texted_code_and_a_resent_one(
    client: IcbcClient, db: Any
) -> None:
    serial, send_no = start_opening(client, "II", OTHER_CARD)
    code = sandbox_outbox(db, PHONE)[0]["code"]
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"

    expect("SMS_CODE_INVALID", lambda: client.confirm_opening(serial, send_no, wrong))
    expect("SMS_CODE_INVALID", lambda: client.confirm_opening(serial, "000000", code))
    resent = client.resend_opening_code(serial)
    new_code = sandbox_outbox(db, PHONE)[0]["code"]
    expect("SMS_CODE_INVALID", lambda: client.confirm_opening(serial, send_no, code))

    assert client.confirm_opening(serial, resent, new_code).status == "opened"
    # Used once: the same code does not open anything again, nor can it be resent.
    expect("SMS_CODE_INVALID", lambda: client.confirm_opening(serial, resent, new_code))
    expect("REQUEST_INVALID", lambda: client.resend_opening_code(serial))


def test_code_is_burnt_after_five_wrong_tries_and_expires_after_five_minutes(
    client: IcbcClient, db: Any, clock: ManualClock
) -> None:
    serial, send_no = start_opening(client, "II", OTHER_CARD)
    code = sandbox_outbox(db, PHONE)[0]["code"]
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        expect("SMS_CODE_INVALID", lambda: client.confirm_opening(serial, send_no, wrong))
    expect("SMS_CODE_INVALID", lambda: client.confirm_opening(serial, send_no, code))

    late, late_no = start_opening(client, "II", OTHER_CARD)
    late_code = sandbox_outbox(db, PHONE)[0]["code"]
    clock.advance(5 * 60)
    expect("SMS_CODE_INVALID", lambda: client.confirm_opening(late, late_no, late_code))


def test_verifying_again_returns_the_same_e_wallet(client: IcbcClient, db: Any) -> None:
    first = opened(client, db, "II", OTHER_CARD)

    assert opened(client, db, "II", OTHER_CARD).account == first.account


def test_an_opening_icbc_finishes_later_comes_as_a_notify(
    db: Any, clock: ManualClock, keys: dict[str, str]
) -> None:
    bank = start_fake(db, clock, keys, openings_pending=True)
    try:
        client = client_for(bank, clock)
        result = opened(client, db, "III", OTHER_CARD)
        notice = client.verify_notify(bank.opening_notify(result.serial, "http://x/icbc/notify"))
    finally:
        bank.stop()

    assert (result.status, result.account) == ("pending", None)
    assert notice.kind == "wallet_open" and notice.encrypted
    later = client.read_opening(notice)
    assert later.status == "opened" and later.serial == result.serial
    assert later.account is not None and later.account.account_class == "III"


def test_balance_and_details_of_the_account(client: IcbcClient, db: Any) -> None:
    opened(client, db, "I", ICBC_CARD)

    assert client.account_balance(ICBC_CARD) == OPENING_BALANCE_FEN
    items, total = client.account_transactions(ICBC_CARD, 1, 20)
    assert total == 1
    assert items[0]["direction"] == "in"
    assert items[0]["amount_fen"] == items[0]["balance_fen"] == OPENING_BALANCE_FEN
    assert items[0]["occurred_at"].endswith("+08:00")
    expect("ACCOUNT_NOT_FOUND", lambda: client.account_balance("6212000000000000000"))


def test_paying_from_the_account_debits_once_or_not_at_all(
    client: IcbcClient, fake: FakeIcbc, db: Any, clock: ManualClock
) -> None:
    wallet = opened(client, db, "II", OTHER_CARD).account
    assert wallet is not None and wallet.wallet_no
    number = wallet.wallet_no

    paid = client.pay_from_account("CY10", number, 30360, "物业费 2 笔", "acct1")
    again = client.pay_from_account("CY10", number, 30360, "物业费 2 笔", "acct1")

    assert (paid.status, paid.amount_fen, paid.paid_at) == ("paid", 30360, clock.now())
    assert again == paid
    assert client.account_balance(number) == OPENING_BALANCE_FEN - 30360
    items, total = client.account_transactions(number, 1, 1)
    assert total == 2 and items[0]["direction"] == "out" and items[0]["summary"] == "物业费 2 笔"
    assert items[0]["transaction_id"] == paid.transaction_id
    expect("ORDER_CONFLICT", lambda: client.pay_from_account("CY10", number, 1, "x", "acct1"))
    fake.set_balance(number, 100)
    refused = expect(
        "BALANCE_INSUFFICIENT", lambda: client.pay_from_account("CY11", number, 101, "x", "acct1")
    )
    assert not refused.retryable
    assert client.account_balance(number) == 100
    assert client.account_transactions(number, 1, 1)[1] == 2  # nothing recorded


# Auto-debit.


def signed_agreement(
    client: IcbcClient, db: Any, number: str, limit: int, end: date, agreement_id: str = "AD1"
) -> str:
    send_no = client.autodebit_send_code(agreement_id, number, PERSON, limit, end)
    code = sandbox_outbox(db, PHONE)[0]["code"]
    return client.autodebit_sign(agreement_id, number, PERSON, limit, end, send_no, code)


def test_the_agreement_needs_the_texted_code_then_charges_once(
    client: IcbcClient, db: Any, clock: ManualClock
) -> None:
    opened(client, db, "I", ICBC_CARD)
    send_no = client.autodebit_send_code("AD1", ICBC_CARD, PERSON, 100_000, date(2029, 3, 1))
    sms = sandbox_outbox(db, PHONE)[0]
    assert "代扣协议" in sms["text"]
    wrong = f"{(int(sms['code']) + 1) % 1_000_000:06d}"
    expect(
        "SMS_CODE_INVALID",
        lambda: client.autodebit_sign(
            "AD1", ICBC_CARD, PERSON, 100_000, date(2029, 3, 1), send_no, wrong
        ),
    )
    agreement = client.autodebit_sign(
        "AD1", ICBC_CARD, PERSON, 100_000, date(2029, 3, 1), send_no, sms["code"]
    )

    charged = client.autodebit_charge(agreement, "ADCY1", 25_000, "物业费 2026-03")
    again = client.autodebit_charge(agreement, "ADCY1", 25_000, "物业费 2026-03")

    assert charged.status == "paid" and charged.paid_at == clock.now()
    assert again == charged
    assert client.account_balance(ICBC_CARD) == OPENING_BALANCE_FEN - 25_000
    client.autodebit_charge(agreement, "ADCY2", 1_000, "停车费")
    page1, total = client.account_transactions(ICBC_CARD, 1, 2)
    page2, _ = client.account_transactions(ICBC_CARD, 2, 2)
    assert total == 3
    assert [i["summary"] for i in page1 + page2] == ["停车费", "物业费 2026-03", "沙箱开户存入"]


def test_the_agreement_is_only_for_the_account_holder(client: IcbcClient, db: Any) -> None:
    opened(client, db, "I", ICBC_CARD)
    someone = Person("李四", "440305199001010137", PHONE)

    expect(
        "NAME_MISMATCH",
        lambda: client.autodebit_send_code("AD2", ICBC_CARD, someone, 100, date(2029, 3, 1)),
    )


def test_autodebit_limit_balance_cancel_and_lapse(
    client: IcbcClient, fake: FakeIcbc, db: Any, clock: ManualClock
) -> None:
    wallet = opened(client, db, "II", OTHER_CARD).account
    assert wallet is not None and wallet.wallet_no
    number = wallet.wallet_no
    agreement = signed_agreement(client, db, number, 10_000, date(2026, 3, 31))

    expect(
        "AUTODEBIT_LIMIT_EXCEEDED", lambda: client.autodebit_charge(agreement, "AD3", 10_001, "x")
    )
    fake.set_balance(number, 500)
    declined = client.autodebit_charge(agreement, "AD4", 600, "物业费")
    assert (declined.status, declined.paid_at) == ("failed", None)
    assert client.account_balance(number) == 500

    clock.advance(31 * 24 * 3600)  # past the agreement's end date
    expect("AGREEMENT_INVALID", lambda: client.autodebit_charge(agreement, "AD5", 100, "x"))

    fresh = signed_agreement(client, db, number, 10_000, date(2027, 1, 1), "AD9")
    client.autodebit_cancel("AD9", number, PERSON, 10_000, date(2027, 1, 1))
    client.autodebit_cancel("AD9", number, PERSON, 10_000, date(2027, 1, 1))
    expect("AGREEMENT_INVALID", lambda: client.autodebit_charge(fresh, "AD6", 100, "x"))


# Failures and trust.


def test_gateway_down_is_a_retryable_network_error(fake: FakeIcbc, clock: ManualClock) -> None:
    down = client_for(fake, clock, icbc_gateway=closed_port_url())

    refused = expect("NETWORK_ERROR", lambda: down.query_payment("CY1"))

    assert refused.retryable


def test_system_busy_is_retryable(client: IcbcClient, fake: FakeIcbc) -> None:
    fake.fail_next("SYSTEM_BUSY")

    assert expect("SYSTEM_BUSY", lambda: client.account_balance(ICBC_CARD)).retryable


def test_fake_rejects_a_request_signed_with_the_wrong_key(
    fake: FakeIcbc, clock: ManualClock, keys: dict[str, str]
) -> None:
    impostor = client_for(fake, clock, icbc_private_key=keys["stranger"])

    refused = expect("SIGNATURE_REJECTED", lambda: wechat_order(impostor, "CY9", 100))

    assert not refused.retryable
    assert fake.db[ORDERS].find_one({"_id": "CY9"}) is None


# complete(): settle and deliver a real notify.


class NotifyEndpoint:
    """A stand-in for POST /icbc/notify: verifies with the client and answers its signed reply."""

    def __init__(self, client: IcbcClient) -> None:
        self.client = client
        self.received: list[NotifyPayload] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers["Content-Length"])).decode()
                form = dict(parse_qsl(raw, keep_blank_values=True))
                try:
                    notice = endpoint.client.verify_notify(form)
                    payload = endpoint.client.read_payment(notice)
                except IcbcError:
                    text = endpoint.client.notify_reply(False, "", "verify failed", False)
                else:
                    endpoint.received.append(payload)
                    text = endpoint.client.notify_reply(True, payload.msg_id, "success", False)
                body = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        host, port = self.server.server_address[:2]
        self.url = f"http://{host}:{port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def endpoint(client: IcbcClient) -> Iterator[NotifyEndpoint]:
    server = NotifyEndpoint(client)
    yield server
    server.close()


def test_complete_posts_a_notify_signed_rsa_and_checks_the_signed_answer(
    client: IcbcClient, endpoint: NotifyEndpoint, clock: ManualClock
) -> None:
    placed = wechat_order(client, "CY5", 8800)
    services = SimpleNamespace(icbc=client)

    outcome = sandbox_icbc.complete(services, endpoint.url, "CY5", "success")

    assert outcome["acknowledged"] is True
    assert outcome["reply_verified"] is True
    assert outcome["status"] == "paid"
    assert outcome["http_status"] == 200
    assert outcome["reply"]["response_biz_content"]["return_code"] == 0
    [payload] = endpoint.received
    assert (payload.order_no, payload.amount_fen, payload.success) == ("CY5", 8800, True)
    assert payload.transaction_id == placed["order_id"]
    assert payload.paid_at == clock.now()
    assert set(payload.raw) == set(icbc_sheets.PAY_NOTIFY)  # the live notify's fields
    assert outcome["reply"]["response_biz_content"]["msg_id"] == payload.msg_id

    # ICBC re-sends: the same result may be delivered again, a different one may not.
    assert sandbox_icbc.complete(services, endpoint.url, "CY5", "success")["acknowledged"]
    assert len(endpoint.received) == 2
    with pytest.raises(AppError) as conflict:
        sandbox_icbc.complete(services, endpoint.url, "CY5", "fail")
    assert conflict.value.code == "CONFLICT"
    with pytest.raises(AppError) as missing:
        sandbox_icbc.complete(services, endpoint.url, "CY-none", "success")
    assert missing.value.code == "NOT_FOUND"


def test_complete_with_a_failed_payment_and_an_unreachable_endpoint(client: IcbcClient) -> None:
    wechat_order(client, "CY6", 100)

    outcome = sandbox_icbc.complete(SimpleNamespace(icbc=client), closed_port_url(), "CY6", "fail")

    assert outcome["status"] == "failed"
    assert (outcome["acknowledged"], outcome["reply"], outcome["http_status"]) == (
        False,
        None,
        None,
    )
    assert client.query_payment("CY6").status == "failed"


def test_unacknowledged_when_the_endpoint_cannot_verify(
    fake: FakeIcbc, clock: ManualClock, keys: dict[str, str]
) -> None:
    # The endpoint trusts another gateway key: it answers failure, ICBC would re-send.
    sceptic = client_for(fake, clock, icbc_gateway_public_key=public_key_pem(keys["stranger"]))
    endpoint = NotifyEndpoint(sceptic)
    try:
        wechat_order(client_for(fake, clock), "CY7", 100)
        outcome = sandbox_icbc.complete(
            SimpleNamespace(icbc=sceptic), endpoint.url, "CY7", "success"
        )
    finally:
        endpoint.close()

    assert outcome["reply_verified"] is True
    assert outcome["acknowledged"] is False
    assert outcome["reply"]["response_biz_content"]["return_code"] == 1


def test_notify_signed_over_the_api_path_when_so_configured(
    db: Any, clock: ManualClock, keys: dict[str, str]
) -> None:
    fake = start_fake(db, clock, keys, notify_signs_api_path=True)
    client = client_for(fake, clock)
    endpoint = NotifyEndpoint(client)
    try:
        assert client.settings.icbc_notify_sign_path == fake.paths["pay"]
        wechat_order(client, "CY8", 100)
        outcome = sandbox_icbc.complete(
            SimpleNamespace(icbc=client), endpoint.url, "CY8", "success"
        )
    finally:
        endpoint.close()
        fake.stop()

    assert outcome["acknowledged"] is True


def test_complete_needs_a_running_fake(client: IcbcClient, fake: FakeIcbc) -> None:
    fake.stop()

    with pytest.raises(AppError) as missing:
        sandbox_icbc.complete(SimpleNamespace(icbc=client), "http://127.0.0.1:1", "CY1", "success")
    assert missing.value.code == "NOT_FOUND"


# Keys on disk.


def test_keys_persist_in_the_key_dir_owner_only_the_gateways_1024_bits(
    tmp_path: Path, db: Any, clock: ManualClock
) -> None:
    from cryptography.hazmat.primitives import serialization

    first = FakeIcbc(db, clock, key_dir=tmp_path / "icbc")
    second = FakeIcbc(db, clock, key_dir=tmp_path / "icbc")

    assert second.gateway_public_key == first.gateway_public_key
    assert second.merchant_public_key == first.merchant_public_key
    assert first.gateway_public_key != first.merchant_public_key
    sizes = [
        serialization.load_pem_public_key(k.encode()).key_size  # type: ignore[union-attr]
        for k in (first.gateway_public_key, first.merchant_public_key)
    ]
    assert sizes == [1024, 2048]
    for name in ("gateway_private.pem", "merchant_private.pem"):
        mode = stat.S_IMODE(os.stat(tmp_path / "icbc" / name).st_mode)
        assert mode == 0o600
