"""The ICBC client against the ICBC sandbox, over real HTTP on loopback with real RSA keys."""

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

from caiyun.adapters.icbc import (
    IcbcClient,
    IcbcError,
    IcbcSignatureError,
    NotifyPayload,
    PaymentStatus,
    WalletInfo,
    icbc_time,
    sign_params,
    verify_response,
)
from caiyun.adapters.sms import sandbox_outbox
from caiyun.data.embedded import EmbeddedEngine
from caiyun.errors import AppError
from caiyun.sandbox import icbc as sandbox_icbc
from caiyun.sandbox.icbc import OPENING_BALANCE_FEN, FakeIcbc
from caiyun.settings import Settings

ICBC_CARD = "6222020000000000000"  # Luhn-valid, ICBC Class I
OTHER_CARD = "6228480000000000000"  # Luhn-valid, another bank
ID_NUMBER = "11010519491231002X"  # the GB 11643 example
PHONE = "13800138000"


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


def verified_wallet(client: IcbcClient, db: Any, method: str, card: str) -> WalletInfo:
    ticket = client.realname_start(method, "张三", ID_NUMBER, card, PHONE)  # type: ignore[arg-type]
    code = sandbox_outbox(db, PHONE)[0]["code"]
    return client.realname_confirm(ticket, code)


def expect(code: str, call: Any) -> IcbcError:
    with pytest.raises(IcbcError) as refused:
        call()
    assert refused.value.code == code, refused.value
    return refused.value


# Payments.


def test_created_payment_is_pending_until_the_bank_settles_it(
    client: IcbcClient, fake: FakeIcbc, clock: ManualClock
) -> None:
    expires = clock.now() + timedelta(minutes=15)

    params = client.create_payment("CY1", 12345, "物业费 1 笔", "oPayer", "card", expires)

    assert params["out_trade_no"] == "CY1"
    assert params["total_amt"] == "12345"
    assert params["order_id"] and params["pay_token"]
    assert "return_code" not in params
    pending = client.query_payment("CY1")
    assert pending == PaymentStatus("CY1", "pending", 12345, params["order_id"], None)

    clock.advance(30)
    fake.settle("CY1", "success")

    paid = client.query_payment("CY1")
    assert (paid.status, paid.amount_fen, paid.transaction_id) == (
        "paid",
        12345,
        params["order_id"],
    )
    assert paid.paid_at == clock.now()


def test_placing_the_same_order_again_is_idempotent_but_not_with_another_amount(
    client: IcbcClient, clock: ManualClock
) -> None:
    expires = clock.now() + timedelta(minutes=15)
    first = client.create_payment("CY2", 500, "物业费", None, "wallet", expires)

    assert client.create_payment("CY2", 500, "物业费", None, "wallet", expires) == first
    refused = expect(
        "ORDER_CONFLICT",
        lambda: client.create_payment("CY2", 501, "物业费", None, "wallet", expires),
    )
    assert not refused.retryable


def test_unknown_order_and_expired_order(client: IcbcClient, clock: ManualClock) -> None:
    expect("ORDER_NOT_FOUND", lambda: client.query_payment("CY-none"))

    client.create_payment("CY3", 100, "物业费", None, "card", clock.now() + timedelta(minutes=15))
    clock.advance(15 * 60)

    assert client.query_payment("CY3").status == "closed"


def test_failed_payment_reads_failed(
    client: IcbcClient, fake: FakeIcbc, clock: ManualClock
) -> None:
    client.create_payment("CY4", 100, "物业费", None, "card", clock.now() + timedelta(minutes=15))
    fake.settle("CY4", "fail")

    status = client.query_payment("CY4")
    assert (status.status, status.paid_at) == ("failed", None)


# Real-name verification and the wallet.


def test_icbc_card_verification_texts_a_code_and_opens_a_class_i_wallet(
    client: IcbcClient, db: Any
) -> None:
    ticket = client.realname_start("card", "张三", ID_NUMBER, ICBC_CARD, PHONE)

    [sms] = sandbox_outbox(db, PHONE)
    assert sms["text"].startswith("【工商银行】")
    assert sms["code"] in sms["text"] and len(sms["code"]) == 6
    wallet = client.realname_confirm(ticket, sms["code"])
    assert wallet.wallet_class == "I"
    assert wallet.linked_card_masked == "6222 **** **** 0000"
    assert ICBC_CARD not in wallet.wallet_no


def test_wallet_method_accepts_another_banks_card_and_opens_class_ii(
    client: IcbcClient, db: Any
) -> None:
    wallet = verified_wallet(client, db, "wallet", OTHER_CARD)

    assert wallet.wallet_class == "II"
    assert wallet.linked_card_masked == "6228 **** **** 0000"


def test_card_method_with_another_banks_card_is_not_icbc_card_and_sends_nothing(
    client: IcbcClient, db: Any
) -> None:
    refused = expect(
        "NOT_ICBC_CARD", lambda: client.realname_start("card", "张三", ID_NUMBER, OTHER_CARD, PHONE)
    )

    assert not refused.retryable
    assert sandbox_outbox(db, PHONE) == []
    # No card, ID or phone number ever lands in an error message.
    printed = "".join(traceback.format_exception(refused))
    for secret in (OTHER_CARD, ID_NUMBER, PHONE):
        assert secret not in printed


def test_bad_id_number_or_card_number_is_refused(client: IcbcClient) -> None:
    expect(
        "ID_NUMBER_INVALID",
        lambda: client.realname_start("card", "张三", "110105194912310021", ICBC_CARD, PHONE),
    )
    expect(
        "CARD_INVALID",
        lambda: client.realname_start("card", "张三", ID_NUMBER, "6222020000000000001", PHONE),
    )


def test_confirm_works_only_with_the_texted_code(client: IcbcClient, db: Any) -> None:
    ticket = client.realname_start("wallet", "张三", ID_NUMBER, OTHER_CARD, PHONE)
    code = sandbox_outbox(db, PHONE)[0]["code"]
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"

    expect("SMS_CODE_INVALID", lambda: client.realname_confirm(ticket, wrong))
    expect("SMS_CODE_INVALID", lambda: client.realname_confirm("AP-unknown", code))

    assert client.realname_confirm(ticket, code).wallet_class == "II"
    # Used once: the same code does not open anything again.
    expect("SMS_CODE_INVALID", lambda: client.realname_confirm(ticket, code))


def test_code_is_burnt_after_five_wrong_tries_and_expires_after_five_minutes(
    client: IcbcClient, db: Any, clock: ManualClock
) -> None:
    ticket = client.realname_start("wallet", "张三", ID_NUMBER, OTHER_CARD, PHONE)
    code = sandbox_outbox(db, PHONE)[0]["code"]
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        expect("SMS_CODE_INVALID", lambda: client.realname_confirm(ticket, wrong))
    expect("SMS_CODE_INVALID", lambda: client.realname_confirm(ticket, code))

    late = client.realname_start("wallet", "张三", ID_NUMBER, OTHER_CARD, PHONE)
    late_code = sandbox_outbox(db, PHONE)[0]["code"]
    clock.advance(5 * 60)
    expect("SMS_CODE_INVALID", lambda: client.realname_confirm(late, late_code))


def test_verifying_again_returns_the_same_wallet(client: IcbcClient, db: Any) -> None:
    first = verified_wallet(client, db, "card", ICBC_CARD)

    assert verified_wallet(client, db, "card", ICBC_CARD) == first


def test_wallet_balance_and_transactions(client: IcbcClient, db: Any) -> None:
    wallet = verified_wallet(client, db, "card", ICBC_CARD)

    assert client.wallet_balance(wallet.wallet_no) == OPENING_BALANCE_FEN
    items, total = client.wallet_transactions(wallet.wallet_no, 1, 20)
    assert total == 1
    assert items[0]["direction"] == "in"
    assert items[0]["amount_fen"] == items[0]["balance_fen"] == OPENING_BALANCE_FEN
    assert items[0]["occurred_at"].endswith("+08:00")
    expect("WALLET_NOT_FOUND", lambda: client.wallet_balance("6212000000000000000"))


# Auto-debit.


def test_autodebit_signs_charges_once_and_pages_transactions(
    client: IcbcClient, db: Any, clock: ManualClock
) -> None:
    wallet = verified_wallet(client, db, "card", ICBC_CARD)
    agreement = client.sign_autodebit(wallet.wallet_no, 100_000, date(2029, 3, 1))

    charged = client.autodebit_charge(agreement, "AD1", 25_000, "物业费 2026-03")
    again = client.autodebit_charge(agreement, "AD1", 25_000, "物业费 2026-03")

    assert charged.status == "paid" and charged.paid_at == clock.now()
    assert again == charged
    assert client.wallet_balance(wallet.wallet_no) == OPENING_BALANCE_FEN - 25_000
    assert client.query_payment("AD1").status == "paid"
    client.autodebit_charge(agreement, "AD2", 1_000, "停车费")
    page1, total = client.wallet_transactions(wallet.wallet_no, 1, 2)
    page2, _ = client.wallet_transactions(wallet.wallet_no, 2, 2)
    assert total == 3
    assert [i["summary"] for i in page1 + page2] == ["停车费", "物业费 2026-03", "沙箱开户存入"]
    assert [i["direction"] for i in page1] == ["out", "out"]


def test_autodebit_limit_balance_cancel_and_lapse(
    client: IcbcClient, fake: FakeIcbc, db: Any, clock: ManualClock
) -> None:
    wallet = verified_wallet(client, db, "wallet", OTHER_CARD)
    agreement = client.sign_autodebit(wallet.wallet_no, 10_000, date(2026, 3, 31))

    expect(
        "AUTODEBIT_LIMIT_EXCEEDED", lambda: client.autodebit_charge(agreement, "AD3", 10_001, "x")
    )
    fake.set_balance(wallet.wallet_no, 500)
    declined = client.autodebit_charge(agreement, "AD4", 600, "物业费")
    assert (declined.status, declined.paid_at) == ("failed", None)
    assert client.wallet_balance(wallet.wallet_no) == 500

    clock.advance(31 * 24 * 3600)  # past the agreement's end date
    expect("AGREEMENT_INVALID", lambda: client.autodebit_charge(agreement, "AD5", 100, "x"))

    fresh = client.sign_autodebit(wallet.wallet_no, 10_000, date(2027, 1, 1))
    client.cancel_autodebit(fresh)
    client.cancel_autodebit(fresh)
    expect("AGREEMENT_INVALID", lambda: client.autodebit_charge(fresh, "AD6", 100, "x"))


# Failures and trust.


def test_gateway_down_is_a_retryable_network_error(fake: FakeIcbc, clock: ManualClock) -> None:
    down = client_for(fake, clock, icbc_gateway=closed_port_url())

    refused = expect("NETWORK_ERROR", lambda: down.query_payment("CY1"))

    assert refused.retryable


def test_system_busy_is_retryable(client: IcbcClient, fake: FakeIcbc) -> None:
    fake.fail_next("SYSTEM_BUSY")

    assert expect("SYSTEM_BUSY", lambda: client.wallet_balance("6212")).retryable


def test_fake_rejects_a_request_signed_with_the_wrong_key(
    fake: FakeIcbc, clock: ManualClock, keys: dict[str, str]
) -> None:
    impostor = client_for(fake, clock, icbc_private_key=keys["stranger"])

    refused = expect(
        "SIGNATURE_REJECTED",
        lambda: impostor.create_payment(
            "CY9", 100, "x", None, "card", clock.now() + timedelta(minutes=5)
        ),
    )

    assert not refused.retryable
    assert fake.db[sandbox_icbc.ORDERS].find_one({"_id": "CY9"}) is None


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
        "biz_content": json.dumps({"mer_id": fake.merchant_id, "wallet_no": "6212"}),
    }
    form["sign"] = sign_params(path, form, key)
    return form


def test_fake_checks_signatures_and_msg_id_reuse_over_raw_http(
    fake: FakeIcbc, clock: ManualClock, keys: dict[str, str]
) -> None:
    path = fake.paths["wallet_balance"]

    def post(form: dict[str, str]) -> dict[str, Any]:
        reply = requests.post(fake.url + path, data=form, timeout=5)
        return verify_response(reply.text, fake.gateway_public_key, "SHA1")

    assert post(signed_form(fake, path, keys["stranger"], clock, "m-1"))["return_code"] == 1001
    tampered = signed_form(fake, path, keys["merchant"], clock, "m-2")
    tampered["biz_content"] = tampered["biz_content"].replace("6212", "6213")
    assert post(tampered)["return_code"] == 1001
    good = signed_form(fake, path, keys["merchant"], clock, "m-3")
    assert post(good)["return_code"] == 4001  # verified; the wallet just does not exist
    assert post(good)["return_code"] == 1004  # the same msg_id again


def test_response_algorithm_must_match_the_setting(
    db: Any, clock: ManualClock, keys: dict[str, str]
) -> None:
    sha256 = start_fake(db, clock, keys, response_sign_alg="SHA256")
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
    genuine_key = FakeIcbc(
        db, clock, gateway_private_key=keys["gateway"], merchant_private_key=keys["merchant"]
    ).gateway_public_key
    try:
        client = client_for(impostor, clock, icbc_gateway_public_key=genuine_key)
        with pytest.raises(IcbcSignatureError):
            client.query_payment("CY1")
    finally:
        impostor.stop()


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
                    payload = endpoint.client.verify_notify(form)
                except IcbcError:
                    text = endpoint.client.notify_reply(False, "", "verify failed")
                else:
                    endpoint.received.append(payload)
                    text = endpoint.client.notify_reply(True, payload.msg_id, "success")
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


def test_complete_posts_a_signed_notify_and_checks_the_signed_answer(
    client: IcbcClient, endpoint: NotifyEndpoint, clock: ManualClock
) -> None:
    params = client.create_payment(
        "CY5", 8800, "物业费", "oPayer", "card", clock.now() + timedelta(minutes=15)
    )
    services = SimpleNamespace(icbc=client)

    outcome = sandbox_icbc.complete(services, endpoint.url, "CY5", "success")

    assert outcome["acknowledged"] is True
    assert outcome["reply_verified"] is True
    assert outcome["status"] == "paid"
    assert outcome["http_status"] == 200
    assert outcome["reply"]["response_biz_content"]["return_code"] == 0
    [payload] = endpoint.received
    assert (payload.order_no, payload.amount_fen, payload.success) == ("CY5", 8800, True)
    assert payload.transaction_id == params["order_id"]
    assert payload.paid_at == clock.now()
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


def test_complete_with_a_failed_payment_and_an_unreachable_endpoint(
    client: IcbcClient, clock: ManualClock
) -> None:
    client.create_payment("CY6", 100, "物业费", None, "wallet", clock.now() + timedelta(minutes=15))

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
    sceptic = client_for(
        fake,
        clock,
        icbc_gateway_public_key=FakeIcbc(
            fake.db,
            clock,
            gateway_private_key=keys["stranger"],
            merchant_private_key=keys["merchant"],
        ).gateway_public_key,
    )
    endpoint = NotifyEndpoint(sceptic)
    try:
        client_for(fake, clock).create_payment(
            "CY7", 100, "物业费", None, "card", clock.now() + timedelta(minutes=15)
        )
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
        client.create_payment(
            "CY8", 100, "物业费", None, "card", clock.now() + timedelta(minutes=15)
        )
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


def test_keys_persist_in_the_key_dir_owner_only(
    tmp_path: Path, db: Any, clock: ManualClock
) -> None:
    first = FakeIcbc(db, clock, key_dir=tmp_path / "icbc")
    second = FakeIcbc(db, clock, key_dir=tmp_path / "icbc")

    assert second.gateway_public_key == first.gateway_public_key
    assert second.merchant_public_key == first.merchant_public_key
    assert first.gateway_public_key != first.merchant_public_key
    for name in ("gateway_private.pem", "merchant_private.pem"):
        mode = stat.S_IMODE(os.stat(tmp_path / "icbc" / name).st_mode)
        assert mode == 0o600
