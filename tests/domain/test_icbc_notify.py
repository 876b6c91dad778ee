"""ICBC's payment notify, as the API Gateway trigger ``POST /icbc/notify`` delivers it.

Notifies are produced by the running ICBC sandbox (really signed with its gateway key); forged
ones are signed with another key. The reply is checked the way ICBC checks it.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from billing import (
    ADMIN,
    ALICE,
    ERIN,
    NOTIFY_URL,
    RESIDENT_APPID,
    as_paid,
    bank_order,
    charges,
    get_order,
    list_bills,
    messages,
    notifies,
    pay,
    post_notify,
    reply_of,
    snapshot,
    status_of,
    verify,
)
from conftest import invoke, make_settings
from round_trips import counted
from worlds import ok

from caiyun.adapters.icbc_protocol import rsa_verify, sign_params, signing_string
from caiyun.domain import payments
from caiyun.sandbox.functions import handler
from caiyun.sandbox.icbc import FakeIcbc
from caiyun.services import Services, build_services, install_services
from caiyun.stores.orders import ORDERS

# ------------------------------------------------------------------------------ success


def test_valid_success_notify_settles_the_order_once_and_tells_the_payer(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee, world.oct_parking))
    form = bank.notify_form(bank.settle(order["order_no"], "success"), NOTIFY_URL)

    answer = reply_of(post_notify(urlencode(form)), bank)

    biz = json.loads(form["biz_content"])
    assert answer["return_code"] == 0
    assert answer["msg_id"] == biz["msg_id"]
    seen = ok(get_order(ALICE, order["order_no"]))
    assert seen["status"] == "paid"
    assert seen["paid_at"] is not None
    assert status_of(ALICE, world.oct_fee) == "paid"
    assert status_of(ALICE, world.oct_parking) == "paid"
    assert status_of(ALICE, world.nov_fee) == "unpaid"
    assert ok(list_bills(ALICE))["unpaid_total_fen"] == 12500
    # The order is the ledger of the charge that paid it, and names the notify that said so.
    stored = svc.db[ORDERS].find_one({"_id": order["order_no"]})
    assert (stored["amount_fen"], stored["account_id"]) == (17000, world.ids[ALICE.openid])
    assert stored["transaction_id"] == biz["order_id"]
    assert charges(svc) == 1
    told = messages(ALICE, "payment")
    assert len(told) == 1
    assert "170.00" in told[0]["body"]
    assert order["order_no"] in told[0]["page"]
    assert messages(ERIN, "payment") == []  # the payer is told, not the whole house
    kept = notifies(svc)
    assert len(kept) == 1
    assert kept[0]["outcome"] == "applied"
    assert kept[0]["order_no"] == order["order_no"]
    assert kept[0]["body"] == urlencode(form)


def test_success_notify_finds_and_wins_the_order_in_one_update(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee, world.oct_parking))
    form = bank.notify_form(bank.settle(order["order_no"], "success"), NOTIFY_URL)

    with counted(svc) as sent:
        assert reply_of(post_notify(urlencode(form)), bank)["return_code"] == 0

    assert sent == [
        "payment_orders.find_one_and_update",  # amount checked in the winning update, which
        # also records the charge and names the notify
        "bills.update_many",  # its match count tells how many bills the order settled
        "messages.insert_many",  # the payer told, the WeChat push queued in the same write
        "icbc_notifies.insert_one",  # kept once, with its outcome
    ]
    assert status_of(ALICE, world.oct_fee) == status_of(ALICE, world.oct_parking) == "paid"


def test_repeated_success_notify_leaves_the_paid_bills_and_flags_no_refund(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee, world.oct_parking))
    form = urlencode(bank.notify_form(bank.settle(order["order_no"], "success"), NOTIFY_URL))
    reply_of(post_notify(form), bank)
    settled = snapshot(svc)
    svc.clock.advance(60)

    assert reply_of(post_notify(form), bank)["return_code"] == 0

    assert snapshot(svc) == settled
    assert [k["outcome"] for k in notifies(svc)] == ["applied", "duplicate"]


def test_a_notify_is_verified_with_the_algorithm_its_sign_type_names(
    svc: Services, bank: FakeIcbc, keys: dict[str, str], world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee))
    form = bank.notify_form(bank.settle(order["order_no"], "success"), NOTIFY_URL)
    # As the live gateway signs them: sign_type RSA, SHA1withRSA over the notify URL's path.
    assert form["sign_type"] == "RSA"
    text = signing_string("/icbc/notify", form)
    assert rsa_verify(text, form["sign"], bank.gateway_public_key, "SHA1")
    rsa2 = {**form, "sign_type": "RSA2"}
    rsa2["sign"] = sign_params("/icbc/notify", rsa2, keys["gateway"], "RSA2")

    assert reply_of(post_notify(urlencode(rsa2)), bank)["return_code"] == 0
    assert reply_of(post_notify(urlencode(form)), bank)["return_code"] == 0

    assert [k["outcome"] for k in notifies(svc)] == ["applied", "duplicate"]
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "paid"


def test_a_notify_naming_another_sign_type_is_refused_and_logged(
    svc: Services,
    bank: FakeIcbc,
    keys: dict[str, str],
    world: SimpleNamespace,
    caplog: pytest.LogCaptureFixture,
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee))

    with caplog.at_level(logging.INFO, logger="caiyun"):
        answer = reply_of(post_notify(_sign_type("MD5")(svc, bank, keys, order["order_no"])), bank)

    assert answer["return_code"] != 0
    assert notifies(svc)[-1]["reason"] == "SIGN_TYPE_REFUSED"
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "caiyun"]
    [line] = {json.dumps(x, sort_keys=True) for x in lines if x["function"] == "icbc_callback"}
    logged = json.loads(line)
    assert (logged["notify"], logged["reason"]) == ("rejected", "SIGN_TYPE_REFUSED")
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "pending"


def test_twenty_second_payments_for_a_settled_order_are_flagged_never_settled(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    """Issue 17.5: a paid notify naming another bank transaction for an order already paid is
    a second charge of the resident: flagged for refund once per extra settlement, shown to
    staff, counted in the summary, told to the resident; the bills are settled once."""
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee, world.oct_parking))
    settled = bank.settle(order["order_no"], "success")
    reply_of(post_notify(urlencode(bank.notify_form(settled, NOTIFY_URL))), bank)
    bills_after_first = sorted(svc.db["bills"].find({}), key=lambda b: b["_id"])
    extra = [
        urlencode(bank.notify_form({**settled, "order_id": f"EXTRA{n:02d}ICBC"}, NOTIFY_URL))
        for n in range(20)
    ]

    for body in extra + extra:  # ICBC resends each of them
        assert reply_of(post_notify(body), bank)["return_code"] == 0

    flagged = list(svc.db["payment_issues"].find({"kind": "extra_settlement"}))
    assert sorted(f["transaction_id"] for f in flagged) == [f"EXTRA{n:02d}ICBC" for n in range(20)]
    assert all(f["order_no"] == order["order_no"] and f["amount_fen"] == 17000 for f in flagged)
    assert sorted(svc.db["bills"].find({}), key=lambda b: b["_id"]) == bills_after_first
    assert svc.db[ORDERS].find_one({})["transaction_id"] == settled["order_id"]
    assert charges(svc) == 21  # every charge is on record
    titles = [m["title"] for m in messages(ALICE, "payment")]
    assert titles.count("缴费成功") == 1 and titles.count("多付款项将退还") == 20
    community = world.h101["community_id"]
    summary = ok(
        invoke("bills", {"action": "staff_summary", "community_id": community}, ADMIN, "staff")
    )
    assert summary["refund_due_count"] == 20 and summary["refund_due_fen"] == 20 * 17000
    issues = ok(
        invoke(
            "bills",
            {"action": "payment_issues", "community_id": community, "page_size": 100},
            ADMIN,
            "staff",
        )
    )
    assert issues["total"] == 20
    assert {i["kind"] for i in issues["items"]} == {"extra_settlement"}
    outcomes = [k["outcome"] for k in notifies(svc)]
    assert outcomes == ["applied"] + ["extra_settlement"] * 40


def test_failure_notify_of_another_amount_changes_nothing(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee))
    failed = {**bank.settle(order["order_no"], "fail"), "amount_fen": 1}
    before = snapshot(svc)

    answer = reply_of(post_notify(urlencode(bank.notify_form(failed, NOTIFY_URL))), bank)

    assert answer["return_code"] != 0
    assert snapshot(svc) == before
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "pending"
    assert notifies(svc)[-1]["outcome"] == "amount_mismatch"


def test_base64_encoded_notify_body_is_read_like_a_plain_one(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee))
    form = bank.notify_form(bank.settle(order["order_no"], "success"), NOTIFY_URL)
    body = base64.b64encode(urlencode(form).encode("utf-8")).decode("ascii")

    event = {
        "httpMethod": "POST",
        "path": "/icbc/notify",
        "headers": {"content-type": "application/x-www-form-urlencoded"},
        "body": body,
        "isBase64Encoded": True,
        "requestContext": {"sourceIp": "202.106.0.20", "requestId": "apigw-b64"},
    }
    answer = reply_of(handler("icbc_callback")(event, {}), bank)

    assert answer["return_code"] == 0
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "paid"


def test_a_notify_through_the_function_url_is_verified_over_its_root_path(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    # The deploy's notify URL is icbc_callback's function URL; ICBC signs over that URL's
    # path, "/", which the settings derive when no sign path is set.
    function_url = "https://1312345678-8yq2kz4m9a.ap-guangzhou.tencentscf.com/"
    overrides = {
        **bank.settings_overrides(),
        "icbc_notify_sign_path": "",
        "icbc_notify_url": function_url,
        "icbc_timeout_s": 5.0,
        "wechat_appid": RESIDENT_APPID,
    }
    wired = build_services(make_settings(**overrides), clock=svc.clock, db=svc.db)
    install_services(wired)
    assert wired.settings.icbc_notify_sign_path == "/"
    verify(wired, ALICE)
    order = ok(pay(ALICE, world.oct_fee))
    form = bank.notify_form(bank.settle(order["order_no"], "success"), function_url)

    event = {
        "httpMethod": "POST",
        "path": "/",
        "headers": {
            "content-type": "application/x-www-form-urlencoded",
            "x-scf-remote-addr": "202.106.0.20",
        },
        "body": urlencode(form),
        "queryString": {},
    }
    answer = reply_of(handler("icbc_callback")(event, {"request_id": "url-1"}), bank)

    assert answer["return_code"] == 0
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "paid"


def test_notify_delivered_by_the_sandbox_bank_over_http_is_acknowledged(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    """The sandbox bank posting the notify itself, through a tiny gateway in front of our
    handler, reads our reply as acknowledged (signature verified, return_code 0)."""
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee))

    class Gateway(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"])).decode("utf-8")
            reply = post_notify(body)
            payload = reply["body"].encode("utf-8")
            self.send_response(reply["statusCode"])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Gateway)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        outcome = bank.complete(f"http://{host}:{port}", order["order_no"], "success")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

    assert outcome["acknowledged"] is True
    assert outcome["reply_verified"] is True
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "paid"


# ------------------------------------------------------------------------------ failure


def test_failed_payment_notify_fails_the_order_and_releases_the_bills(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee, world.oct_parking))
    form = bank.notify_form(bank.settle(order["order_no"], "fail"), NOTIFY_URL)

    answer = reply_of(post_notify(urlencode(form)), bank)

    assert answer["return_code"] == 0  # understood: ICBC may stop resending
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "failed"
    assert status_of(ALICE, world.oct_fee) == "unpaid"
    assert status_of(ALICE, world.oct_parking) == "unpaid"
    assert charges(svc) == 0
    assert messages(ALICE, "payment") == []
    assert ok(pay(ALICE, world.oct_fee))["status"] == "pending"  # payable again


def test_failure_notify_after_success_does_not_undo_the_payment(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee))
    paid = bank.notify_form(bank.settle(order["order_no"], "success"), NOTIFY_URL)
    failed = bank.notify_form(
        {**bank_order(svc, order["order_no"]), "status": "failed"}, NOTIFY_URL
    )
    reply_of(post_notify(urlencode(paid)), bank)

    answer = reply_of(post_notify(urlencode(failed)), bank)

    assert answer["return_code"] == 0
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "paid"
    assert status_of(ALICE, world.oct_fee) == "paid"
    assert charges(svc) == 1


# ------------------------------------------------------------------------------ refused


def _forged(svc: Services, bank: FakeIcbc, keys: dict[str, str], order_no: str) -> str:
    form = bank.notify_form(as_paid(svc, order_no), NOTIFY_URL)
    form["sign"] = sign_params("/icbc/notify", form, keys["stranger"], "RSA")
    return urlencode(form)


def _altered(svc: Services, bank: FakeIcbc, keys: dict[str, str], order_no: str) -> str:
    form = bank.notify_form(as_paid(svc, order_no), NOTIFY_URL)
    biz = json.loads(form["biz_content"])
    form["biz_content"] = json.dumps({**biz, "total_amt": "1"}, separators=(",", ":"))
    return urlencode(form)


def _unsigned(svc: Services, bank: FakeIcbc, keys: dict[str, str], order_no: str) -> str:
    form = bank.notify_form(as_paid(svc, order_no), NOTIFY_URL)
    del form["sign"]
    return urlencode(form)


def _empty_sign(svc: Services, bank: FakeIcbc, keys: dict[str, str], order_no: str) -> str:
    form = bank.notify_form(as_paid(svc, order_no), NOTIFY_URL)
    return urlencode({**form, "sign": ""})


def _not_a_form(svc: Services, bank: FakeIcbc, keys: dict[str, str], order_no: str) -> str:
    return json.dumps({"out_trade_no": order_no, "return_code": 0, "total_amt": "12000"})


def _repeated_field(svc: Services, bank: FakeIcbc, keys: dict[str, str], order_no: str) -> str:
    form = bank.notify_form(as_paid(svc, order_no), NOTIFY_URL)
    return urlencode(form) + "&biz_content=" + quote('{"out_trade_no":"x"}')


def _signed_garbage(svc: Services, bank: FakeIcbc, keys: dict[str, str], order_no: str) -> str:
    form = bank.notify_form(as_paid(svc, order_no), NOTIFY_URL)
    form["biz_content"] = "out_trade_no=" + order_no
    form["sign"] = sign_params("/icbc/notify", form, keys["gateway"], "RSA")
    return urlencode(form)


def _other_app(svc: Services, bank: FakeIcbc, keys: dict[str, str], order_no: str) -> str:
    form = bank.notify_form(as_paid(svc, order_no), NOTIFY_URL)
    form["app_id"] = "10000000000000009999"
    form["sign"] = sign_params("/icbc/notify", form, keys["gateway"], "RSA")
    return urlencode(form)


def _sign_type(name: str) -> Any:
    def make(svc: Services, bank: FakeIcbc, keys: dict[str, str], order_no: str) -> str:
        # Really signed by ICBC's key (SHA1, as RSA would be), but naming another sign type.
        form = {**bank.notify_form(as_paid(svc, order_no), NOTIFY_URL), "sign_type": name}
        form["sign"] = sign_params("/icbc/notify", form, keys["gateway"], "RSA")
        return urlencode(form)

    return make


def _relabelled(svc: Services, bank: FakeIcbc, keys: dict[str, str], order_no: str) -> str:
    # ICBC's SHA1 signature presented as RSA2: verified with SHA256, it fails.
    form = bank.notify_form(as_paid(svc, order_no), NOTIFY_URL)
    return urlencode({**form, "sign_type": "RSA2"})


def _unknown_order(svc: Services, bank: FakeIcbc, keys: dict[str, str], order_no: str) -> str:
    other = as_paid(svc, order_no, _id="CY20261125000000DEADBEEF")
    return urlencode(bank.notify_form(other, NOTIFY_URL))


def _amount_mismatch(svc: Services, bank: FakeIcbc, keys: dict[str, str], order_no: str) -> str:
    return urlencode(bank.notify_form(as_paid(svc, order_no, amount_fen=1), NOTIFY_URL))


def _oversized(svc: Services, bank: FakeIcbc, keys: dict[str, str], order_no: str) -> str:
    form = bank.notify_form(as_paid(svc, order_no), NOTIFY_URL)
    return urlencode({**form, "padding": "x" * 70_000})


BAD_NOTIFIES = {
    "forged signature": _forged,
    "altered after signing": _altered,
    "missing sign": _unsigned,
    "empty sign": _empty_sign,
    "json instead of a form": _not_a_form,
    "repeated field": _repeated_field,
    "signed but biz_content not json": _signed_garbage,
    "signed for another app": _other_app,
    "sign_type CA": _sign_type("CA"),
    "sign_type lower-case rsa": _sign_type("rsa"),
    "sign_type SHA256WithRSA": _sign_type("SHA256WithRSA"),
    "sign_type missing": _sign_type(""),
    "RSA signature labelled RSA2": _relabelled,
    "unknown order": _unknown_order,
    "amount mismatch": _amount_mismatch,
    "oversized body": _oversized,
}


@pytest.mark.parametrize("make", BAD_NOTIFIES.values(), ids=BAD_NOTIFIES.keys())
def test_bad_notify_gets_a_failure_reply_changes_nothing_and_is_kept(
    svc: Services, bank: FakeIcbc, keys: dict[str, str], world: SimpleNamespace, make: Any
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee, world.oct_parking))
    before = snapshot(svc)
    body = make(svc, bank, keys, order["order_no"])

    answer = reply_of(post_notify(body), bank)

    assert answer["return_code"] != 0
    assert snapshot(svc) == before
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "pending"
    assert status_of(ALICE, world.oct_fee) == "paying"
    assert status_of(ALICE, world.oct_parking) == "paying"
    kept = notifies(svc)
    assert len(kept) == 1
    assert kept[0]["outcome"] not in ("applied", "duplicate")
    assert kept[0]["body"] == body[: len(kept[0]["body"])]
    # The genuine notify that follows still settles the order.
    genuine = bank.notify_form(bank.settle(order["order_no"], "success"), NOTIFY_URL)
    assert reply_of(post_notify(urlencode(genuine)), bank)["return_code"] == 0
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "paid"
    assert len(notifies(svc)) == 2


def test_notify_by_get_is_refused_and_changes_nothing(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee))
    form = bank.notify_form(bank.settle(order["order_no"], "success"), NOTIFY_URL)
    event = {
        "httpMethod": "GET",
        "path": "/icbc/notify",
        "headers": {},
        "queryString": form,
        "queryStringParameters": form,
        "body": "",
        "isBase64Encoded": False,
        "requestContext": {"sourceIp": "198.51.100.7", "requestId": "apigw-get"},
    }

    response = handler("icbc_callback")(event, {})

    assert response["statusCode"] == 405
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "pending"


def test_every_notify_good_or_bad_is_kept_for_audit(
    svc: Services, bank: FakeIcbc, keys: dict[str, str], world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee))
    bodies = [make(svc, bank, keys, order["order_no"]) for make in BAD_NOTIFIES.values()]
    genuine = urlencode(bank.notify_form(bank.settle(order["order_no"], "success"), NOTIFY_URL))
    bodies += [genuine, genuine]

    for body in bodies:
        post_notify(body)

    kept = notifies(svc)
    assert len(kept) == len(bodies)
    outcomes = [k["outcome"] for k in kept]
    assert outcomes.count("applied") == 1
    assert outcomes.count("duplicate") == 1
    assert {"rejected", "malformed", "unknown_order", "amount_mismatch"} <= set(outcomes)
    assert all(k["received_at"] is not None for k in kept)


# ------------------------------------------------------------------------------ late notifies


def test_late_success_notify_after_expiry_pays_the_still_unpaid_bills(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee, world.oct_parking))
    svc.clock.advance(svc.settings.order_ttl_s + 1)
    assert payments.expire_orders(svc) == {"orders_ended": 1}
    assert status_of(ALICE, world.oct_fee) == "unpaid"

    late = bank.notify_form(as_paid(svc, order["order_no"]), NOTIFY_URL)
    answer = reply_of(post_notify(urlencode(late)), bank)

    assert answer["return_code"] == 0
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "paid"
    assert status_of(ALICE, world.oct_fee) == "paid"
    assert status_of(ALICE, world.oct_parking) == "paid"
    assert charges(svc, order["order_no"]) == 1
    assert len(messages(ALICE, "payment")) == 1


def test_late_success_for_bills_paid_meanwhile_never_settles_them_twice(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    verify(svc, ALICE)
    verify(svc, ERIN)
    first = ok(pay(ALICE, world.oct_fee))
    svc.clock.advance(svc.settings.order_ttl_s + 1)
    payments.expire_orders(svc)
    second = ok(pay(ERIN, world.oct_fee))
    paid = bank.notify_form(bank.settle(second["order_no"], "success"), NOTIFY_URL)
    reply_of(post_notify(urlencode(paid)), bank)
    settled = svc.db["bills"].find_one({"_id": world.oct_fee})

    late = bank.notify_form(as_paid(svc, first["order_no"]), NOTIFY_URL)
    answer = reply_of(post_notify(urlencode(late)), bank)

    assert answer["return_code"] == 0  # the money arrived: stop resending
    bill = svc.db["bills"].find_one({"_id": world.oct_fee})
    assert bill["status"] == "paid"
    assert bill["order_no"] == second["order_no"]
    assert bill["paid_at"] == settled["paid_at"]
    first_order = svc.db[ORDERS].find_one({"_id": first["order_no"]})
    assert first_order["status"] == "paid"
    assert first_order["needs_refund"] is True
    assert svc.db[ORDERS].find_one({"_id": second["order_no"]}).get("needs_refund") is None


def test_late_success_for_bills_now_in_another_live_order_is_flagged_for_refund(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    """The money of an expired order arrives while its bill sits in a newer, unpaid order.

    Whatever happens next, a paid order either settled all its bills or is flagged for refund:
    otherwise the resident who pays the newer order has paid the bill twice and nobody knows.
    """
    verify(svc, ALICE)
    verify(svc, ERIN)
    first = ok(pay(ALICE, world.oct_fee))
    svc.clock.advance(svc.settings.order_ttl_s + 1)
    payments.expire_orders(svc)
    second = ok(pay(ERIN, world.oct_fee))  # the bill is 支付中 again, in ERIN's order

    late = bank.notify_form(as_paid(svc, first["order_no"]), NOTIFY_URL)
    assert reply_of(post_notify(urlencode(late)), bank)["return_code"] == 0
    paid = bank.notify_form(bank.settle(second["order_no"], "success"), NOTIFY_URL)
    assert reply_of(post_notify(urlencode(paid)), bank)["return_code"] == 0

    bill = svc.db["bills"].find_one({"_id": world.oct_fee})
    assert bill["status"] == "paid"
    for order_no in (first["order_no"], second["order_no"]):
        order = svc.db[ORDERS].find_one({"_id": order_no})
        assert order["status"] == "paid"
        settled_here = bill["order_no"] == order_no
        assert settled_here or order.get("needs_refund") is True, (
            f"order {order_no} took the money but settled no bill and is not flagged for refund"
        )


def test_sign_with_unescaped_plus_signs_still_verifies(
    svc: Services, bank: FakeIcbc, world: SimpleNamespace
) -> None:
    """Some senders leave the base64 ``+`` of the signature unescaped in the form; a form
    decoder turns it into a space. The notify must still verify (and nothing else loosens)."""
    verify(svc, ALICE)
    order = ok(pay(ALICE, world.oct_fee))
    form = bank.notify_form(bank.settle(order["order_no"], "success"), NOTIFY_URL)
    sign = form.pop("sign")
    body = urlencode(form) + "&sign=" + quote(sign, safe="+/=")

    answer = reply_of(post_notify(body), bank)

    assert answer["return_code"] == 0
    assert ok(get_order(ALICE, order["order_no"]))["status"] == "paid"
