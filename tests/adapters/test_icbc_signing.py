"""ICBC signatures: the request signing string, raw-slice response checks, notifies, replies."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from hypothesis import given
from hypothesis import strategies as st

from caiyun.adapters.icbc import (
    IcbcClient,
    IcbcError,
    IcbcMalformed,
    IcbcSignatureError,
    NotifyPayload,
    generate_private_key_pem,
    public_key_pem,
    raw_json_member,
    rsa_sign,
    rsa_verify,
    sign_params,
    signing_string,
    verify_response,
)
from caiyun.settings import Settings

PAY_PATH = "/api/cardbusiness/aggregatepay/b2c/online/consumepurchase/V1"
APP_ID = "10000000000000001234"
MERCHANT_ID = "020000000000001"


@pytest.fixture(scope="module")
def ours() -> str:
    return generate_private_key_pem()


@pytest.fixture(scope="module")
def gateway() -> str:
    return generate_private_key_pem()


@pytest.fixture(scope="module")
def stranger() -> str:
    return generate_private_key_pem()


class FixedClock:
    def now(self) -> datetime:
        return datetime(2026, 3, 1, 16, 30, 5, tzinfo=timezone.utc)


def make_client(ours: str, gateway: str, **overrides: Any) -> IcbcClient:
    values: dict[str, Any] = {
        "icbc_gateway": "http://127.0.0.1:9",
        "icbc_app_id": APP_ID,
        "icbc_merchant_id": MERCHANT_ID,
        "icbc_private_key": ours,
        "icbc_gateway_public_key": public_key_pem(gateway),
        "icbc_notify_url": "https://pay.example.com/icbc/notify",
    }
    values.update(overrides)
    return IcbcClient(Settings(**values), FixedClock())


def raw_verify(text: str, signature: str, private_key: str, algorithm: Any) -> bool:
    """Verify with cryptography directly, independently of the module under test."""
    key = serialization.load_pem_public_key(public_key_pem(private_key).encode())
    try:
        key.verify(  # type: ignore[union-attr]
            base64.b64decode(signature), text.encode(), padding.PKCS1v15(), algorithm
        )
    except InvalidSignature:
        return False
    return True


# The request signing string.


def test_signing_string_is_path_then_sorted_non_empty_raw_pairs() -> None:
    params = {
        "timestamp": "2026-03-02 00:30:05",
        "app_id": APP_ID,
        "sign": "must-not-be-signed",
        "encrypt_type": "",
        "biz_content": '{"body":"物业费 & 停车费","total_fee":"100"}',
        "msg_id": "m1",
    }

    assert signing_string(PAY_PATH, params) == (
        PAY_PATH + "?app_id=10000000000000001234"
        '&biz_content={"body":"物业费 & 停车费","total_fee":"100"}'
        "&msg_id=m1&timestamp=2026-03-02 00:30:05"
    )


def test_request_signature_is_sha256_with_rsa_over_the_signing_string(ours: str) -> None:
    params = {"app_id": APP_ID, "msg_id": "m1", "biz_content": "{}", "sign_type": "RSA2"}

    signature = sign_params(PAY_PATH, params, ours)

    expected_text = (
        PAY_PATH + "?app_id=10000000000000001234&biz_content={}&msg_id=m1&sign_type=RSA2"
    )
    assert raw_verify(expected_text, signature, ours, hashes.SHA256())
    assert not raw_verify(expected_text, signature, ours, hashes.SHA1())


@pytest.mark.parametrize("field", ["app_id", "msg_id", "timestamp", "biz_content", "sign_type"])
def test_altering_any_signed_field_breaks_the_signature(ours: str, field: str) -> None:
    params = {
        "app_id": APP_ID,
        "msg_id": "m1",
        "timestamp": "2026-03-02 00:30:05",
        "biz_content": '{"total_fee":"100"}',
        "sign_type": "RSA2",
    }
    signature = sign_params(PAY_PATH, params, ours)
    public = public_key_pem(ours)
    assert rsa_verify(signing_string(PAY_PATH, params), signature, public, "SHA256")

    altered = {**params, field: params[field] + "0"}

    assert not rsa_verify(signing_string(PAY_PATH, altered), signature, public, "SHA256")
    assert not rsa_verify(signing_string("/api/other/V1", params), signature, public, "SHA256")


class RecordingSession:
    """Stands in for requests.Session: records the POST, then fails like a dead network."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def post(self, url: str, **kwargs: Any) -> Any:
        self.calls.append({"url": url, **kwargs})
        raise requests.ConnectionError("no network in this test")


def test_client_posts_the_documented_form_signed_with_our_key(ours: str, gateway: str) -> None:
    session = RecordingSession()
    client = IcbcClient(make_client(ours, gateway).settings, FixedClock(), session)  # type: ignore[arg-type]

    for _ in range(2):
        with pytest.raises(IcbcError):
            client.query_payment("CY1")

    first, second = session.calls
    form = first["data"]
    assert first["url"] == "http://127.0.0.1:9/api/cardbusiness/aggregatepay/b2c/online/orderqry/V1"
    assert set(form) == {
        "app_id",
        "msg_id",
        "format",
        "charset",
        "sign_type",
        "timestamp",
        "biz_content",
        "sign",
    }
    assert (form["app_id"], form["format"], form["charset"], form["sign_type"]) == (
        APP_ID,
        "json",
        "UTF-8",
        "RSA2",
    )
    assert form["timestamp"] == "2026-03-02 00:30:05"  # GMT+8
    assert form["msg_id"] != second["data"]["msg_id"]
    assert form["biz_content"] == json.dumps(
        json.loads(form["biz_content"]), ensure_ascii=False, separators=(",", ":")
    )
    assert json.loads(form["biz_content"])["out_trade_no"] == "CY1"
    text = signing_string("/api/cardbusiness/aggregatepay/b2c/online/orderqry/V1", form)
    assert raw_verify(text, form["sign"], ours, hashes.SHA256())


def test_create_payment_keeps_chinese_text_unescaped_in_biz_content(
    ours: str, gateway: str
) -> None:
    session = RecordingSession()
    client = IcbcClient(make_client(ours, gateway).settings, FixedClock(), session)  # type: ignore[arg-type]
    expires = FixedClock().now() + timedelta(minutes=15)

    with pytest.raises(IcbcError) as down:
        client.create_payment("CY2", 12345, "物业费 2 笔", "oPayer", "wallet", expires)

    assert down.value.retryable
    biz_text = session.calls[0]["data"]["biz_content"]
    assert "物业费 2 笔" in biz_text
    biz = json.loads(biz_text)
    assert biz["total_fee"] == "12345"
    assert biz["expire_time"] == "2026-03-02 00:45:05"
    assert biz["mer_url"] == "https://pay.example.com/icbc/notify"
    assert biz["open_id"] == "oPayer"


# Responses: the exact text of response_biz_content is verified.

ODD_BIZ = (
    '{ "return_msg" : "成功\\u3002 \\"ok\\"",\n  "return_code":0 ,'
    '"nested":{"list":[1,"}{",{"x":"]"}]},"amount":"100"  }'
)


def test_response_verifies_over_the_raw_slice_with_odd_spacing_order_and_unicode(
    gateway: str,
) -> None:
    signature = rsa_sign(ODD_BIZ, gateway, "SHA1")
    # sign before the content, as nothing in the format forbids.
    body = '{\n"sign" : "' + signature + '",  "response_biz_content" :' + ODD_BIZ + "\n}"

    biz = verify_response(body, public_key_pem(gateway), "SHA1")

    assert biz["return_code"] == 0
    assert biz["return_msg"] == '成功。 "ok"'
    assert biz["nested"] == {"list": [1, "}{", {"x": "]"}]}
    # What a client that re-serialised the parsed value would check: it does not verify.
    for reserialised in (
        json.dumps(json.loads(ODD_BIZ), ensure_ascii=False, separators=(",", ":")),
        json.dumps(json.loads(ODD_BIZ)),
    ):
        assert not rsa_verify(reserialised, signature, public_key_pem(gateway), "SHA1")


def test_tampered_response_is_a_signature_error(gateway: str) -> None:
    signature = rsa_sign(ODD_BIZ, gateway, "SHA1")
    tampered = ODD_BIZ.replace('"amount":"100"', '"amount":"900"')
    body = '{"response_biz_content":' + tampered + ',"sign":"' + signature + '"}'

    with pytest.raises(IcbcSignatureError):
        verify_response(body, public_key_pem(gateway), "SHA1")


def test_response_signed_by_another_key_or_unsigned_is_refused(gateway: str, stranger: str) -> None:
    forged = (
        '{"response_biz_content":'
        + ODD_BIZ
        + ',"sign":"'
        + rsa_sign(ODD_BIZ, stranger, "SHA1")
        + '"}'
    )
    unsigned = '{"response_biz_content":' + ODD_BIZ + "}"

    for body in (forged, unsigned):
        with pytest.raises(IcbcSignatureError):
            verify_response(body, public_key_pem(gateway), "SHA1")


def test_response_algorithm_follows_the_setting(gateway: str) -> None:
    body = (
        '{"response_biz_content":'
        + ODD_BIZ
        + ',"sign":"'
        + rsa_sign(ODD_BIZ, gateway, "SHA256")
        + '"}'
    )

    assert verify_response(body, public_key_pem(gateway), "SHA256")["amount"] == "100"
    with pytest.raises(IcbcSignatureError):
        verify_response(body, public_key_pem(gateway), "SHA1")


def test_slicer_takes_the_top_level_member_only() -> None:
    document = (
        '{"note":"\\"response_biz_content\\":{\\"fake\\":1}",'
        '"inner":{"response_biz_content":{"fake":2}},'
        '"response_biz_content":{"real":"\\\\"}}'
    )

    assert raw_json_member(document, "response_biz_content") == '{"real":"\\\\"}'
    assert raw_json_member('{"a": [1, {"b": "]"}] , "c":true}', "a") == '[1, {"b": "]"}]'
    assert raw_json_member('{"a":1,"c": null }', "c") == "null"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(
    before=st.dictionaries(st.text(), JSON_VALUES, max_size=3),
    value=st.dictionaries(st.text(), JSON_VALUES, max_size=4),
    indent=st.sampled_from([None, 0, 2]),
    ascii_only=st.booleans(),
)
def test_slice_is_exactly_the_value_text_however_it_is_written(
    before: dict[str, Any], value: dict[str, Any], indent: int | None, ascii_only: bool
) -> None:
    members = {k: v for k, v in before.items() if k != "response_biz_content"}
    members["response_biz_content"] = value
    document = json.dumps(members, indent=indent, ensure_ascii=ascii_only)

    sliced = raw_json_member(document, "response_biz_content")

    assert json.loads(sliced) == value
    assert sliced in document
    if indent is None:
        assert sliced == json.dumps(value, ensure_ascii=ascii_only)


@pytest.mark.parametrize(
    "document",
    [
        '{"response_biz_content":{"a":1},"response_biz_content":{"a":2}}',  # named twice
        '{"other":{}}',  # missing
        '{"response_biz_content":{"a":1}} trailing',
        '{"response_biz_content":{"a":"unterminated}',
        '{"response_biz_content":{"a":1}',
        '["response_biz_content"]',
        '{"\\x":1,"response_biz_content":{}}',  # a member name with a bad escape
        "",
    ],
)
def test_slicer_refuses_ambiguous_or_broken_documents(document: str) -> None:
    with pytest.raises(IcbcMalformed):
        raw_json_member(document, "response_biz_content")


# Notifies.

NOTIFY_BIZ = {
    "return_code": 0,
    "return_msg": "支付成功",
    "msg_id": "notify-msg-1",
    "mer_id": MERCHANT_ID,
    "out_trade_no": "CY20260302003005ABCD",
    "order_id": "ICBC-TRX-1",
    "total_amt": "12345",
    "pay_time": "2026-03-02 00:31:00",
}


def notify_form(
    key: str, path: str = "/icbc/notify", biz: dict[str, Any] | None = None, **fields: str
) -> dict[str, str]:
    form = {
        "from": "icbc-api",
        "api": PAY_PATH,
        "app_id": APP_ID,
        "charset": "UTF-8",
        "format": "json",
        "encrypt_type": "",
        "timestamp": "2026-03-02 00:31:01",
        "sign_type": "RSA2",
        "biz_content": json.dumps(biz or NOTIFY_BIZ, ensure_ascii=False),
        **fields,
    }
    form["sign"] = sign_params(path, form, key)
    return form


def test_valid_notify_is_read_after_its_signature(ours: str, gateway: str) -> None:
    payload = make_client(ours, gateway).verify_notify(notify_form(gateway))

    assert payload == NotifyPayload(
        msg_id="notify-msg-1",
        order_no="CY20260302003005ABCD",
        amount_fen=12345,
        success=True,
        transaction_id="ICBC-TRX-1",
        paid_at=datetime(2026, 3, 1, 16, 31, tzinfo=timezone.utc),
        raw=NOTIFY_BIZ,
    )


def test_failed_payment_notify_is_not_success(ours: str, gateway: str) -> None:
    biz = {**NOTIFY_BIZ, "return_code": "9001", "pay_time": ""}

    payload = make_client(ours, gateway).verify_notify(notify_form(gateway, biz=biz))

    assert not payload.success
    assert payload.paid_at is None


def test_notify_forged_with_another_key_is_refused(ours: str, gateway: str, stranger: str) -> None:
    with pytest.raises(IcbcSignatureError):
        make_client(ours, gateway).verify_notify(notify_form(stranger))


def test_notify_with_altered_amount_is_refused(ours: str, gateway: str) -> None:
    form = notify_form(gateway)
    form["biz_content"] = form["biz_content"].replace('"12345"', '"1"')

    with pytest.raises(IcbcSignatureError):
        make_client(ours, gateway).verify_notify(form)


def test_notify_without_sign_is_refused(ours: str, gateway: str) -> None:
    form = notify_form(gateway)
    del form["sign"]

    with pytest.raises(IcbcSignatureError):
        make_client(ours, gateway).verify_notify(form)
    with pytest.raises(IcbcSignatureError):
        make_client(ours, gateway).verify_notify({**form, "sign": ""})


@pytest.mark.parametrize(
    "biz_content",
    ["not json {", "[1, 2]", json.dumps({**NOTIFY_BIZ, "total_amt": "12.5"}), json.dumps({})],
)
def test_correctly_signed_but_malformed_notify_is_refused(
    ours: str, gateway: str, biz_content: str
) -> None:
    form = notify_form(gateway)
    form["biz_content"] = biz_content
    form["sign"] = sign_params("/icbc/notify", form, gateway)

    with pytest.raises(IcbcMalformed):
        make_client(ours, gateway).verify_notify(form)


def test_notify_for_another_app_is_refused(ours: str, gateway: str) -> None:
    with pytest.raises(IcbcMalformed):
        make_client(ours, gateway).verify_notify(
            notify_form(gateway, app_id="10000000000000009999")
        )


def test_form_sign_type_cannot_downgrade_the_algorithm(ours: str, gateway: str) -> None:
    form = {k: v for k, v in notify_form(gateway).items() if k != "sign"}
    form["sign_type"] = "RSA"
    form["sign"] = rsa_sign(signing_string("/icbc/notify", form), gateway, "SHA1")

    with pytest.raises(IcbcSignatureError):
        make_client(ours, gateway).verify_notify(form)
    # Only the deployment's setting chooses SHA1.
    sha1 = make_client(ours, gateway, icbc_notify_sign_alg="SHA1")
    assert sha1.verify_notify(form).amount_fen == 12345


def test_notify_sign_path_is_configurable(ours: str, gateway: str) -> None:
    form = notify_form(gateway, path=PAY_PATH)

    with pytest.raises(IcbcSignatureError):
        make_client(ours, gateway).verify_notify(form)
    configured = make_client(ours, gateway, icbc_notify_sign_path=PAY_PATH)
    assert configured.verify_notify(form).order_no == "CY20260302003005ABCD"


def test_signature_whose_plus_signs_became_spaces_still_verifies(ours: str, gateway: str) -> None:
    for attempt in range(50):
        form = notify_form(gateway, timestamp=f"2026-03-02 00:31:{attempt:02d}")
        if "+" in form["sign"]:
            break
    form["sign"] = form["sign"].replace("+", " ")

    assert make_client(ours, gateway).verify_notify(form).amount_fen == 12345


def test_notify_as_a_real_form_body_round_trips(ours: str, gateway: str) -> None:
    body = requests.Request("POST", "http://x", data=notify_form(gateway)).prepare().body
    assert isinstance(body, str)
    form = dict(parse_qsl(body, keep_blank_values=True))

    assert make_client(ours, gateway).verify_notify(form).order_no == "CY20260302003005ABCD"


# The reply to a notify.


@pytest.mark.parametrize(("success", "code"), [(True, 0), (False, 1)])
def test_notify_reply_is_signed_over_the_documented_span(
    ours: str, gateway: str, success: bool, code: int
) -> None:
    text = make_client(ours, gateway).notify_reply(success, "notify-msg-1", "成功")

    cut = text.rfind(',"sign":')
    span = text[1:cut]
    assert span == (
        f'"response_biz_content":{{"return_code":{code},"return_msg":"成功",'
        '"msg_id":"notify-msg-1"},"sign_type":"RSA2"'
    )
    reply = json.loads(text)
    assert list(reply) == ["response_biz_content", "sign_type", "sign"]
    assert raw_verify(span, reply["sign"], ours, hashes.SHA256())


# Keys.


def bare(pem: str) -> str:
    return "".join(line for line in pem.splitlines() if not line.startswith("-----"))


def test_bare_base64_keys_as_icbc_hands_them_out_work(ours: str, gateway: str) -> None:
    client = make_client(bare(ours), gateway, icbc_gateway_public_key=bare(public_key_pem(gateway)))

    text = client.notify_reply(True, "m", "ok")
    assert rsa_verify(
        text[1 : text.rfind(',"sign":')], json.loads(text)["sign"], public_key_pem(ours), "SHA256"
    )
    assert client.verify_notify(notify_form(gateway)).amount_fen == 12345


def test_missing_or_broken_private_key_is_a_config_error_without_the_key(gateway: str) -> None:
    broken = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ1dC1ub3QtYS1rZXk=\n-----END PRIVATE KEY-----"
    for key in ("", broken):
        with pytest.raises(IcbcError) as refused:
            make_client(key, gateway).notify_reply(True, "m", "ok")
        assert refused.value.code == "CONFIG"
        assert "c2VjcmV0" not in str(refused.value)
