"""ICBC's wire protocol: the request signing string and sign types, AES, raw-slice response
checks (plain and encrypted), notifies verified with the algorithm they name, replies, keys.

Every signature is checked again here with ``cryptography`` directly, independently of the
module under test; the expected strings come from ICBC's samples and a notify captured from the
live gateway (see caiyun.adapters.icbc_protocol)."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from hypothesis import given
from hypothesis import strategies as st

from caiyun.adapters.icbc import IcbcClient
from caiyun.adapters.icbc_protocol import (
    IcbcError,
    IcbcMalformed,
    IcbcSignatureError,
    aes_decrypt,
    aes_encrypt,
    generate_private_key_pem,
    key_problems,
    public_key_pem,
    raw_json_member,
    rsa_sign,
    rsa_verify,
    sign_params,
    signing_string,
    verify_response,
)
from caiyun.adapters.icbc_values import NotifyPayload
from caiyun.settings import Settings

PAY_PATH = "/api/cardbusiness/aggregatepay/b2c/online/consumepurchase/V1"
APP_ID = "10000000000000001234"
MERCHANT_ID = "020000000000001"
AES_KEY = "i5N/TQHG9hq00OpdNzpUUw=="  # the JFT samples' key form: base64 of 16 bytes


@pytest.fixture(scope="module")
def ours() -> str:
    return generate_private_key_pem()


@pytest.fixture(scope="module")
def gateway() -> str:
    """ICBC's gateway key: 1024 bits, as in every ICBC sample."""
    return generate_private_key_pem(1024)


@pytest.fixture(scope="module")
def stranger() -> str:
    return generate_private_key_pem(1024)


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
        "icbc_aes_key": AES_KEY,
        "icbc_mer_prtcl_no": "0200000000001020201",
        "wechat_appid": "wx0123456789abcdef",
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


@pytest.mark.parametrize(("sign_type", "digest"), [("RSA", hashes.SHA1), ("RSA2", hashes.SHA256)])
def test_a_sign_type_names_its_digest_rsa_sha1_and_rsa2_sha256(
    ours: str, sign_type: Any, digest: Any
) -> None:
    params = {"app_id": APP_ID, "msg_id": "m1", "biz_content": "{}", "sign_type": sign_type}

    signature = sign_params(PAY_PATH, params, ours, sign_type)

    expected_text = (
        PAY_PATH + f"?app_id=10000000000000001234&biz_content={{}}&msg_id=m1&sign_type={sign_type}"
    )
    other = hashes.SHA256 if digest is hashes.SHA1 else hashes.SHA1
    assert raw_verify(expected_text, signature, ours, digest())
    assert not raw_verify(expected_text, signature, ours, other())


def test_the_signing_string_of_a_notify_captured_from_the_live_gateway() -> None:
    """The fields of a real aggregate-pay notify (public client ``wjgsxty/icbc``,
    ``Callback.php``) give back the exact string ICBC signed: sorted, raw, the empty
    ``encrypt_type`` left out, ``sign_type=RSA``."""
    biz = (
        '{"access_type":"9","attach":"","bank_disc_amt":"0","mer_id":"100159932969",'
        '"order_id":"100159932969000522309190000065","out_trade_no":"20230919111830181",'
        '"pay_time":"20231025000001","return_code":"1","return_msg":"交易失败","total_amt":"1"}'
    )
    form = {
        "from": "icbc-api",
        "api": PAY_PATH,
        "app_id": "11000000000000000901",
        "charset": "UTF-8",
        "format": "json",
        "encrypt_type": "",
        "timestamp": "2023-09-19 13:21:52",
        "sign_type": "RSA",
        "biz_content": biz,
        "sign": "not part of it",
    }

    assert signing_string("/callback/icbc", form) == (
        f"/callback/icbc?api={PAY_PATH}&app_id=11000000000000000901&biz_content={biz}"
        "&charset=UTF-8&format=json&from=icbc-api&sign_type=RSA&timestamp=2023-09-19 13:21:52"
    )


@pytest.mark.parametrize("field", ["app_id", "msg_id", "timestamp", "biz_content", "sign_type"])
def test_altering_any_signed_field_breaks_the_signature(ours: str, field: str) -> None:
    params = {
        "app_id": APP_ID,
        "msg_id": "m1",
        "timestamp": "2026-03-02 00:30:05",
        "biz_content": '{"total_fee":"100"}',
        "sign_type": "RSA2",
    }
    signature = sign_params(PAY_PATH, params, ours, "RSA2")
    public = public_key_pem(ours)
    assert rsa_verify(signing_string(PAY_PATH, params), signature, public, "SHA256")

    altered = {**params, field: params[field] + "0"}

    assert not rsa_verify(signing_string(PAY_PATH, altered), signature, public, "SHA256")
    assert not rsa_verify(signing_string("/api/other/V1", params), signature, public, "SHA256")


# AES, as ICBC's IcbcEncrypt does it.


def reference_aes(text: str, key_b64: str) -> str:
    """AES/CBC/PKCS5Padding with a zero IV, spelt out with cryptography's primitives."""
    from cryptography.hazmat.primitives import padding as sym_padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    padder = sym_padding.PKCS7(128).padder()
    plain = padder.update(text.encode()) + padder.finalize()
    encryptor = Cipher(algorithms.AES(base64.b64decode(key_b64)), modes.CBC(bytes(16))).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()


@pytest.mark.parametrize("text", ["", "{}", '{"custName":"张三","certNo":"11010519491231002X"}'])
def test_aes_is_cbc_with_a_zero_iv_and_pkcs5_padding_keyed_by_the_base64_key(text: str) -> None:
    sealed = aes_encrypt(text, AES_KEY)

    assert sealed == reference_aes(text, AES_KEY)
    assert aes_decrypt(sealed, AES_KEY) == text
    # Deterministic, as the zero IV makes it: ICBC's side decrypts exactly this.
    assert aes_encrypt(text, AES_KEY) == sealed


def test_aes_refuses_a_wrong_key_a_bad_ciphertext_and_a_key_that_is_not_one() -> None:
    sealed = aes_encrypt('{"a":1}', AES_KEY)
    other = base64.b64encode(b"0123456789abcdef").decode()

    for text, key in ((sealed, other), ("not base64!", AES_KEY), (sealed[:-4], AES_KEY)):
        with pytest.raises((IcbcMalformed, IcbcError)):
            assert aes_decrypt(text, key) != '{"a":1}'
    with pytest.raises(IcbcError) as refused:
        aes_encrypt("x", base64.b64encode(b"short").decode())
    assert refused.value.code == "CONFIG"


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


def test_the_wechat_pay_order_is_built_exactly_as_icbcs_sample_builds_it(
    ours: str, gateway: str
) -> None:
    session = RecordingSession()
    client = IcbcClient(make_client(ours, gateway).settings, FixedClock(), session)  # type: ignore[arg-type]
    biz = client.pay_biz("CY2", 12345, "物业费 2 笔", "oPayer", 900, "203.0.113.9")

    with pytest.raises(IcbcError) as down:
        client.create_wechat_payment(biz)

    assert down.value.retryable
    biz_text = session.calls[0]["data"]["biz_content"]
    assert "物业费 2 笔" in biz_text  # Chinese kept as is, compact
    assert json.loads(biz_text) == {
        "mer_id": MERCHANT_ID,
        "out_trade_no": "CY2",
        "pay_mode": "9",  # WeChat Pay (10 would be Alipay, 13 UnionPay)
        "access_type": "9",  # a WeChat mini-program
        "mer_prtcl_no": "0200000000001020201",
        "orig_date_time": "2026-03-02T00:30:05",  # yyyy-MM-dd'T'HH:mm:ss, GMT+8
        "body": "物业费 2 笔",
        "fee_type": "001",
        "spbill_create_ip": "203.0.113.9",
        "total_fee": "12345",
        "mer_url": "https://pay.example.com/icbc/notify",
        "shop_appid": "wx0123456789abcdef",  # the mini-program's appid
        "icbc_appid": APP_ID,
        "open_id": "oPayer",
        "expire_time": "900",  # seconds, as the sample's "120"
        "notify_type": "HS",
        "result_type": "0",
    }
    assert "encrypt_type" not in session.calls[0]["data"]


@pytest.mark.parametrize("sign_type", ["RSA", "RSA2"])
def test_requests_carry_and_are_signed_with_the_apps_registered_sign_type(
    ours: str, gateway: str, sign_type: str
) -> None:
    session = RecordingSession()
    settings = make_client(ours, gateway, icbc_sign_type=sign_type).settings
    client = IcbcClient(settings, FixedClock(), session)  # type: ignore[arg-type]

    with pytest.raises(IcbcError):
        client.account_balance("6212000000000000001")

    form = session.calls[0]["data"]
    assert form["sign_type"] == sign_type
    digest = hashes.SHA1() if sign_type == "RSA" else hashes.SHA256()
    path = "/api/jft/wallet/api/balancequery/V1"
    assert raw_verify(signing_string(path, form), form["sign"], ours, digest)
    # A JFT interface: biz_content goes AES-encrypted, and the signature covers the ciphertext.
    assert form["encrypt_type"] == "AES"
    biz = json.loads(aes_decrypt(form["biz_content"], AES_KEY))
    assert biz["acctNo"] == "6212000000000000001" and biz["appId"] == APP_ID
    assert biz["corpSerno"].startswith(APP_ID) and len(biz["corpSerno"]) <= 36


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


def encrypted_reply(key: str, biz: dict[str, Any], alg: Any = "SHA1") -> str:
    member = json.dumps(aes_encrypt(json.dumps(biz, ensure_ascii=False), AES_KEY))
    signature = rsa_sign(member, key, alg)
    return '{"response_biz_content":' + member + ',"sign":"' + signature + '"}'


def test_an_encrypted_response_is_verified_as_received_then_decrypted(gateway: str) -> None:
    body = encrypted_reply(gateway, {"return_code": 0, "balance": "500000"})

    biz = verify_response(body, public_key_pem(gateway), "SHA1", AES_KEY)

    assert biz == {"return_code": 0, "balance": "500000"}
    # The signed text is the JSON string with its quotes, as the Java SDK slices it.
    member = raw_json_member(body, "response_biz_content")
    assert member.startswith('"') and member.endswith('"')
    assert rsa_verify(member, json.loads(body)["sign"], public_key_pem(gateway), "SHA1")


def test_an_encrypted_response_without_a_key_or_tampered_is_refused(gateway: str) -> None:
    body = encrypted_reply(gateway, {"return_code": 0})
    member = raw_json_member(body, "response_biz_content")
    tampered = body.replace(member, json.dumps(aes_encrypt('{"return_code":1}', AES_KEY)))

    with pytest.raises(IcbcMalformed):
        verify_response(body, public_key_pem(gateway), "SHA1", None)
    with pytest.raises(IcbcSignatureError):
        verify_response(tampered, public_key_pem(gateway), "SHA1", AES_KEY)


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
    "access_type": "9",
    "mer_id": MERCHANT_ID,
    "msg_id": "050258363262818132041002547",
    "order_id": "100159932969000522309190000065",
    "out_trade_no": "CY20260302003005ABCD",
    "pay_time": "20260302003100",
    "pay_type": "9",
    "return_code": "0",
    "return_msg": "交易成功",
    "total_amt": "12345",
}


def notify_form(
    key: str,
    path: str = "/icbc/notify",
    biz: dict[str, Any] | None = None,
    sign_type: Any = "RSA",
    **fields: str,
) -> dict[str, str]:
    """A notify as ICBC posts it: signed with ``sign_type`` (RSA, as the live gateway does)."""
    form = {
        "from": "icbc-api",
        "api": PAY_PATH,
        "app_id": APP_ID,
        "charset": "UTF-8",
        "format": "json",
        "encrypt_type": "",
        "timestamp": "2026-03-02 00:31:01",
        "sign_type": sign_type,
        "biz_content": json.dumps(biz or NOTIFY_BIZ, ensure_ascii=False),
        **fields,
    }
    form["sign"] = sign_params(path, form, key, sign_type)
    return form


def read(client: IcbcClient, form: dict[str, str]) -> NotifyPayload:
    return client.read_payment(client.verify_notify(form))


@pytest.mark.parametrize("sign_type", ["RSA", "RSA2"])
def test_valid_notify_is_read_after_its_signature(ours: str, gateway: str, sign_type: str) -> None:
    payload = read(make_client(ours, gateway), notify_form(gateway, sign_type=sign_type))

    assert payload == NotifyPayload(
        msg_id="050258363262818132041002547",
        order_no="CY20260302003005ABCD",
        amount_fen=12345,
        success=True,
        transaction_id="100159932969000522309190000065",
        paid_at=datetime(2026, 3, 1, 16, 31, tzinfo=timezone.utc),
        raw=NOTIFY_BIZ,
    )


@pytest.mark.parametrize("sign_type", ["", "rsa", "CA", "RSA1", "SHA1withRSA", "RSA2 ", "MD5"])
def test_a_notify_naming_any_other_sign_type_is_refused(
    ours: str, gateway: str, sign_type: str
) -> None:
    form = notify_form(gateway, sign_type="RSA")
    form["sign_type"] = sign_type
    form["sign"] = sign_params("/icbc/notify", form, gateway, "RSA")

    with pytest.raises(IcbcError) as refused:
        make_client(ours, gateway).verify_notify(form)
    assert refused.value.code == "SIGN_TYPE_REFUSED"


def test_the_named_sign_type_chooses_the_algorithm_it_cannot_be_relabelled(
    ours: str, gateway: str
) -> None:
    rsa = notify_form(gateway, sign_type="RSA")
    rsa2 = notify_form(gateway, sign_type="RSA2")

    for form, other in ((rsa, "RSA2"), (rsa2, "RSA")):
        with pytest.raises(IcbcSignatureError):
            make_client(ours, gateway).verify_notify({**form, "sign_type": other})


def test_failed_payment_notify_is_not_success(ours: str, gateway: str) -> None:
    biz = {**NOTIFY_BIZ, "return_code": "1", "return_msg": "交易失败", "pay_time": ""}

    payload = read(make_client(ours, gateway), notify_form(gateway, biz=biz))

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
    form["sign"] = sign_params("/icbc/notify", form, gateway, "RSA")

    with pytest.raises(IcbcMalformed):
        read(make_client(ours, gateway), form)


def test_notify_for_another_app_or_interface_is_refused(ours: str, gateway: str) -> None:
    for changed in ({"app_id": "10000000000000009999"}, {"api": "/api/other/V1"}):
        with pytest.raises(IcbcMalformed):
            make_client(ours, gateway).verify_notify(notify_form(gateway, **changed))


def test_an_encrypted_notify_is_decrypted_after_its_signature_and_answered_encrypted(
    ours: str, gateway: str
) -> None:
    client = make_client(ours, gateway)
    biz = {"msg_id": "m7", "appId": APP_ID, "corpSerno": APP_ID + "A1", "openStatus": "1"}
    form = notify_form(
        gateway,
        biz=biz,
        api="/api/jft/wallet/api/openacct/V2",
        encrypt_type="AES",
        biz_content=aes_encrypt(json.dumps(biz), AES_KEY),
    )

    notice = client.verify_notify(form)
    text = client.notify_reply(True, notice.msg_id, "success", notice.encrypted)

    assert (notice.kind, notice.biz, notice.encrypted) == ("wallet_open", biz, True)
    assert client.read_opening(notice).status == "refused"
    reply = json.loads(text)
    assert json.loads(aes_decrypt(reply["response_biz_content"], AES_KEY)) == {
        "return_code": 0,
        "return_msg": "success",
        "msg_id": "m7",
    }
    cut = text.rfind(',"sign":')
    assert raw_verify(text[1:cut], reply["sign"], ours, hashes.SHA256())


def test_notify_sign_path_is_configurable(ours: str, gateway: str) -> None:
    form = notify_form(gateway, path=PAY_PATH)

    with pytest.raises(IcbcSignatureError):
        make_client(ours, gateway).verify_notify(form)
    configured = make_client(ours, gateway, icbc_notify_sign_path=PAY_PATH)
    assert read(configured, form).order_no == "CY20260302003005ABCD"


def test_signature_whose_plus_signs_became_spaces_still_verifies(ours: str, gateway: str) -> None:
    for attempt in range(50):
        form = notify_form(gateway, timestamp=f"2026-03-02 00:31:{attempt:02d}")
        if "+" in form["sign"]:
            break
    form["sign"] = form["sign"].replace("+", " ")

    assert read(make_client(ours, gateway), form).amount_fen == 12345


def test_notify_as_a_real_form_body_round_trips(ours: str, gateway: str) -> None:
    body = requests.Request("POST", "http://x", data=notify_form(gateway)).prepare().body
    assert isinstance(body, str)
    form = dict(parse_qsl(body, keep_blank_values=True))

    assert read(make_client(ours, gateway), form).order_no == "CY20260302003005ABCD"


# The reply to a notify.


@pytest.mark.parametrize(
    ("success", "code", "sign_type", "digest"),
    [
        (True, 0, "RSA2", hashes.SHA256),
        (False, 1, "RSA2", hashes.SHA256),
        (True, 0, "RSA", hashes.SHA1),
    ],
)
def test_notify_reply_is_signed_over_the_documented_span_with_our_sign_type(
    ours: str, gateway: str, success: bool, code: int, sign_type: str, digest: Any
) -> None:
    client = make_client(ours, gateway, icbc_sign_type=sign_type)
    text = client.notify_reply(success, "notify-msg-1", "成功", False)

    cut = text.rfind(',"sign":')
    span = text[1:cut]
    assert span == (
        f'"response_biz_content":{{"return_code":{code},"return_msg":"成功",'
        f'"msg_id":"notify-msg-1"}},"sign_type":"{sign_type}"'
    )
    reply = json.loads(text)
    assert list(reply) == ["response_biz_content", "sign_type", "sign"]
    assert raw_verify(span, reply["sign"], ours, digest())


# Keys.


def bare(pem: str) -> str:
    return "".join(line for line in pem.splitlines() if not line.startswith("-----"))


def test_bare_base64_keys_as_icbc_hands_them_out_work(ours: str, gateway: str) -> None:
    client = make_client(bare(ours), gateway, icbc_gateway_public_key=bare(public_key_pem(gateway)))

    text = client.notify_reply(True, "m", "ok", False)
    assert rsa_verify(
        text[1 : text.rfind(',"sign":')], json.loads(text)["sign"], public_key_pem(ours), "SHA256"
    )
    assert read(client, notify_form(gateway)).amount_fen == 12345


def test_the_2048_bit_floor_is_for_our_key_only_icbcs_1024_bit_key_is_fine(
    ours: str, gateway: str
) -> None:
    """Every ICBC sample's gateway key is 1024-bit (``MIGfMA0GCSqGSIb3…``)."""
    icbc_sample_key = (
        "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCwFgHD4kzEVPdOj03ctKM7KV+16bWZ5BMNgvEeuEQwfQYkRVwI"
        "9HFOGkwNTMn5hiJXHnlXYCX+zp5r6R52MY0O7BsTCLT7aHaxsANsvI9ABGx3OaTVlPB59M6GPbJh0uXvio0m1r/"
        "lTW3Z60RU6Q3oid/rNhP3CiNgg0W6O3AGqwIDAQAB"
    )

    assert key_problems(ours, public_key_pem(gateway)) == []
    assert key_problems(ours, icbc_sample_key) == []
    assert key_problems(gateway, icbc_sample_key) == [
        "CAIYUN_ICBC_PRIVATE_KEY must be an RSA key of at least 2048 bits"
    ]
    assert key_problems(ours, "not a key") == [
        "CAIYUN_ICBC_GATEWAY_PUBLIC_KEY is not a readable RSA key"
    ]


def test_missing_or_broken_private_key_is_a_config_error_without_the_key(gateway: str) -> None:
    broken = "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ1dC1ub3QtYS1rZXk=\n-----END PRIVATE KEY-----"
    for key in ("", broken):
        with pytest.raises(IcbcError) as refused:
            make_client(key, gateway).notify_reply(True, "m", "ok", False)
        assert refused.value.code == "CONFIG"
        assert "c2VjcmV0" not in str(refused.value)
