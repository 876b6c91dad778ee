"""ICBC's field sheets: for each interface we call, the fields of its request and its answer.

One sheet per interface, as data: our client builds its requests from them and the local bank
(:mod:`caiyun.sandbox.icbc`) refuses any request that breaks them (an unknown or missing field,
a value of the wrong type or format, plain text where AES is required) and answers only with the
fields they list. Where a field comes from is said per sheet:

* ``pay`` and ``query``: the aggregate-pay samples ``CardbusinessAggregatepayB2cOnline
  ConsumepurchaseRequestV1`` / ``…OrderqryRequestV1`` (Java, as used in the public clients
  ``PayServiceImpl`` and ``IcbcSvc``), with the answer fields of ``…ConsumepurchaseResponseV1``
  and ``…OrderqryResponseV1`` as the Go and C# ports declare them. ``pay_mode`` 9 is WeChat Pay,
  10 Alipay, 13 UnionPay; ``access_type`` 9 is a WeChat mini-program; ``expire_time`` is in
  seconds ("120" in the sample); ``orig_date_time`` is ``yyyy-MM-dd'T'HH:mm:ss``.
* ``pay_notify``: the fields of a real aggregate-pay notify captured in a public client
  (``wjgsxty/icbc`` ``Callback.php``): every value a string, ``pay_time`` ``yyyyMMddHHmmss``.
* ``wallet_open`` / ``wallet_sendmsg`` / ``wallet_checksms``: ICBC's JFT (聚富通) wallet samples
  ``JftWalletApiOpenacctV2``, ``JftWalletApiOpenacctsendmsgV1`` and ``JftWalletApiChecksmsV1``:
  camelCase fields, ``biz_content`` AES-encrypted, ``corpSerno`` the 20-digit app id followed by
  the partner's serial (36 characters at most). The samples set ``certType``, ``occupation``,
  ``foreverFlag`` and ``gender`` as numbers; V2 made the last four required.
* ``wallet_pay``: ``JftWalletApiWalletorderfinV1`` (``/api/jft/wallet/api/walletorderfin/V1``).
  Its API sample writes dates ``yyyyMMdd`` and ``tranAmt`` as "20", the UI sample of the same
  order (``JftUiPayJftWalletOrderV1``) ``yyyy-MM-dd`` and "1.00": the sources disagree, so the
  style is a setting (``CAIYUN_ICBC_WALLET_PAY_STYLE``, :data:`PAY_STYLES`).
* ``autodebit_sms`` / ``autodebit_agreement``: ``JftApiUserEntrustProtocolMngV1Test``
  (``/api/jft/api/user/entrust/prtl/msg/V1``) and ``JftUserEntrustprtlMngTestV1``
  (``/api/jft/api/user/entrust/protocol/mng/V1``), each with the field names of its own sample
  (``acctNo``/``acctName`` in the first, ``accountNo``/``accountName`` in the second).

The answers of the JFT interfaces, the wallet balance and detail queries, the password-free
debit and the two JFT notifies have no public sample: their fields here are the ones the local
bank speaks (marked ``ours``), to be checked against the interface sheets the branch hands over
with the contract. Interface paths are settings for the same reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

PayStyle = Literal["compact", "dashed"]
# The two ways the wallet-pay samples write a date and an amount (see wallet_pay above).
PAY_STYLES: dict[str, dict[str, str]] = {
    "compact": {"date": "%Y%m%d", "amount": "fen"},
    "dashed": {"date": "%Y-%m-%d", "amount": "yuan"},
}

FORMATS: dict[str, str] = {
    "text": r"[^\x00-\x1f\x7f]{1,256}",
    "alnum": r"[0-9A-Za-z]{1,50}",
    "digits": r"[0-9]{1,32}",
    "app_id": r"[0-9]{20}",
    "corp_serno": r"[0-9]{20}[0-9A-Za-z]{1,16}",
    "fen": r"[1-9][0-9]{0,11}",
    "yuan": r"(0|[1-9][0-9]{0,9})\.[0-9]{2}",
    "seconds": r"[1-9][0-9]{0,5}",
    "date": r"[0-9]{4}-[0-9]{2}-[0-9]{2}",
    "compact_date": r"[0-9]{8}",
    "time": r"[0-9]{2}:[0-9]{2}:[0-9]{2}",
    "local_iso": r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}",
    "compact_time": r"[0-9]{14}",
    "url": r"https?://[^\s]{1,500}",
    "phone": r"1[3-9][0-9]{9}",
    "card": r"[0-9]{12,19}",
    "masked_card": r"[0-9]{4}[ *]*[0-9]{4}",
    "cert_no": r"[0-9]{17}[0-9X]",
    "ip": r"[0-9A-Fa-f:.]{2,45}",
    "sms_code": r"[0-9]{4,8}",
    "json": r"\{.{0,4000}\}",
}


@dataclass(frozen=True)
class Field:
    """One field: its JSON type, whether it must be there, and its format or allowed values.

    ``fmt`` names a :data:`FORMATS` entry; ``amount`` and ``pay_date`` follow the wallet-pay
    style. ``when`` makes the field required only while another field has one of the given
    values (``shop_appid`` only for WeChat Pay).
    """

    kind: Literal["str", "int", "list"] = "str"
    required: bool = False
    fmt: str = "text"
    values: tuple[str, ...] = ()
    when: tuple[str, tuple[str, ...]] | None = None


def req(fmt: str = "text", *values: str, kind: Literal["str", "int"] = "str") -> Field:
    """A required field."""
    return Field(kind, True, fmt, values)


def opt(fmt: str = "text", *values: str, kind: Literal["str", "int"] = "str") -> Field:
    """An optional field."""
    return Field(kind, False, fmt, values)


def needed_when(other: str, values: tuple[str, ...], fmt: str = "text") -> Field:
    """A field required while ``other`` has one of ``values``."""
    return Field("str", False, fmt, (), (other, values))


@dataclass(frozen=True)
class Sheet:
    """An interface: the setting holding its path, whether ``biz_content`` is AES-encrypted,
    and the fields of its request and of its answer."""

    name: str
    path_setting: str
    encrypted: bool
    request: Mapping[str, Field]
    response: Mapping[str, Field]


# Every answer carries these (IcbcResponse's return_code / return_msg / msg_id).
_ANSWER = {
    "return_code": Field("int", True, "digits"),
    "return_msg": opt(),
    "msg_id": opt(),
}

PAY = Sheet(
    "pay",
    "icbc_pay_path",
    False,
    {
        "mer_id": req("alnum"),
        "out_trade_no": req("alnum"),
        "pay_mode": req("text", "9", "10", "13"),
        "access_type": req("text", "5", "7", "8", "9"),
        "mer_prtcl_no": req("alnum"),
        "orig_date_time": req("local_iso"),
        "decive_info": opt(),  # sic: the sample's own spelling
        "body": req(),
        "fee_type": req("text", "001"),
        "spbill_create_ip": opt("ip"),
        "total_fee": req("fen"),
        "mer_url": req("url"),
        "shop_appid": needed_when("pay_mode", ("9",)),
        "icbc_appid": req("app_id"),
        "open_id": needed_when("access_type", ("7", "9")),
        "union_id": needed_when("access_type", ("8",)),
        "mer_acct": opt("digits"),
        "expire_time": opt("seconds"),
        "notify_type": req("text", "HS", "AG"),
        "result_type": opt("text", "0", "1"),
        "pay_limit": opt("text", "no_credit", "no_balance"),
        "order_apd_inf": opt(),
        "detail": opt("json"),
        "return_url": opt("url"),
        "quit_url": opt("url"),
        "cust_name": opt(),
        "cust_cert_type": opt("digits"),
        "cust_cert_no": opt(),
    },
    {
        **_ANSWER,
        "total_amt": opt("digits"),
        "out_trade_no": req("alnum"),
        "order_id": req("alnum"),
        "pay_time": opt("compact_time"),
        "mer_id": opt("alnum"),
        "pay_mode": opt("digits"),
        "access_type": opt("digits"),
        "card_kind": opt("digits"),
        "trade_type": opt(),
        "wx_data_package": opt("json"),
        "zfb_data_package": opt("json"),
        "union_data_package": opt(),
        "third_party_return_code": opt(),
        "third_party_return_msg": opt(),
    },
)

QUERY = Sheet(
    "query",
    "icbc_query_path",
    False,
    {
        "mer_id": req("alnum"),
        "out_trade_no": opt("alnum"),
        "order_id": opt("alnum"),
        "deal_flag": req("text", "0", "1"),
        "icbc_appid": req("app_id"),
        "mer_prtcl_no": opt("alnum"),
    },
    {
        **_ANSWER,
        # 0 paying, 1 paid, 2 failed, 3 revoked, 4 revoking, 5 fully refunded, 6 partly
        # refunded, 7 refunding (the order query's documented statuses).
        "pay_status": req("text", *"01234567"),
        "card_no": opt(),
        "mer_id": opt("alnum"),
        "total_amt": req("digits"),
        "point_amt": opt("digits"),
        "ecoupon_amt": opt("digits"),
        "mer_disc_amt": opt("digits"),
        "coupon_amt": opt("digits"),
        "bank_disc_amt": opt("digits"),
        "payment_amt": opt("digits"),
        "out_trade_no": req("alnum"),
        "order_id": opt("alnum"),
        "pay_time": opt("compact_time"),
        "total_disc_amt": opt("digits"),
        "attach": opt(),
        "third_trade_no": opt(),
        "card_flag": opt(),
        "decr_flag": opt(),
        "open_id": opt(),
        "pay_type": opt("digits"),
        "access_type": opt("digits"),
        "card_kind": opt("digits"),
        "third_party_coupon_amt": opt("digits"),
        "third_party_discount_amt": opt("digits"),
    },
)

PAY_NOTIFY: Mapping[str, Field] = {
    "access_type": req("digits"),
    "attach": opt(),
    "bank_disc_amt": opt("digits"),
    "card_flag": opt(),
    "card_kind": opt(),
    "card_no": opt(),
    "coupon_amt": opt("digits"),
    "cust_id": opt(),
    "decr_flag": opt(),
    "ecoupon_amt": opt("digits"),
    "mer_disc_amt": opt("digits"),
    "mer_id": req("alnum"),
    "msg_id": req("alnum"),
    "open_id": opt(),
    "order_id": req("alnum"),
    "out_trade_no": req("alnum"),
    "pay_time": opt("compact_time"),
    "pay_type": opt("digits"),
    "payment_amt": opt("digits"),
    "point_amt": opt("digits"),
    "return_code": req("text", "0", "1"),
    "return_msg": opt(),
    "third_party_coupon_amt": opt("digits"),
    "third_party_discount_amt": opt("digits"),
    "third_trade_no": opt(),
    "total_amt": req("digits"),
    "total_disc_amt": opt("digits"),
}

_JFT_TRX = {
    "trxAccDate": req("date"),
    "trxAccTime": req("time"),
    "corpDate": req("date"),
}

WALLET_OPEN = Sheet(
    "wallet_open",
    "icbc_wallet_open_path",
    True,
    {
        "appId": req("app_id"),
        "corpSerno": req("corp_serno"),
        "bindMedium": req("card"),
        "certNo": req("cert_no"),
        "certType": req("digits", "0", kind="int"),
        "corpMediumId": opt(),
        "custName": req(),
        "mobileNo": req("phone"),
        "notifyAddr": req("url"),
        "outServiceCode": req("text", "openaccount"),
        **_JFT_TRX,
        # 00 no agreement, 01 Class I, 02 Class II, 03 both (the V2 sample's comment).
        "userProFlag": req("text", "00", "01", "02", "03"),
        "custIp": needed_when("channelType", ("1",), "ip"),
        "custMac": needed_when("channelType", ("1",)),
        "deviceId": needed_when("channelType", ("1",)),
        "browserLang": opt(),
        "browserVersion": opt(),
        # 1 app (custIp, custMac and deviceId required), 2 not an app.
        "channelType": req("text", "1", "2"),
        "cvn2": opt("digits"),
        "expired": opt("digits"),
        "factoryInfo": opt(),
        "memoryCapacity": opt(),
        "screenResolution": opt(),
        "systemVersion": opt(),
        "cpuId": opt(),
        "occupation": req("digits", *(str(n) for n in range(1, 14)), kind="int"),
        "foreverFlag": req("digits", "0", "1", kind="int"),
        "validityPeriod": Field("str", False, "date", (), ("foreverFlag", ("0",))),
        "signDate": opt("date"),
        "gender": req("digits", "1", "2", kind="int"),
        "nationality": opt("digits", kind="int"),
        "birthday": opt("date"),
        "issuingAuthority": opt(),
        "address": opt(),
        "taxDeclarationFlag": opt("digits", "0", "1", "2", kind="int"),
        "customizationInfo": opt(),
        "secretKey": opt(),
        "bindMediumHash": opt("alnum"),
        "isOpenEpay": opt("digits", "0", "1", kind="int"),
        "isOpenQpay": opt("digits", "0", "1", kind="int"),
        "qpayCorpNo": opt("digits"),
        "imgUploadStatus": opt("digits", "0", "1", kind="int"),
        "sellerCode": opt(),
        "indentifySerno": opt(),
        "accountOrgNo": opt(),
        "openPlace": opt(),
    },
    # ours: the serial echoed and the number of the code texted to mobileNo.
    {**_ANSWER, "corpSerno": req("corp_serno"), "smsSendNo": req("digits")},
)

WALLET_SENDMSG = Sheet(
    "wallet_sendmsg",
    "icbc_wallet_sendmsg_path",
    True,
    {
        "appId": req("app_id"),
        "corpSerno": req("corp_serno"),
        "corpSernoOriginal": req("corp_serno"),
        "outServiceCode": req("text", "scode"),
        "type": req("text", "5"),
        **_JFT_TRX,
    },
    {**_ANSWER, "smsSendNo": req("digits")},  # ours
)

WALLET_CHECKSMS = Sheet(
    "wallet_checksms",
    "icbc_wallet_checksms_path",
    True,
    {
        "appId": req("app_id"),
        "corpNo": opt("app_id"),
        "corpSerno": req("corp_serno"),
        "corpSernoOriginal": req("corp_serno"),
        "outServiceCode": req("text", "scodeverify"),
        "smsSendNo": req("digits"),
        "smsScode": req("sms_code"),
        "certNo": opt("cert_no"),
        "certType": opt("digits", "0", kind="int"),
        **_JFT_TRX,
    },
    # ours: 0 opened (acctNo, acctLevel, bindMedium), 2 still being opened (the result
    # notify follows).
    {
        **_ANSWER,
        "corpSernoOriginal": req("corp_serno"),
        "openStatus": req("text", "0", "2"),
        "acctNo": opt("card"),
        "acctLevel": opt("text", "1", "2", "3"),
        "bindMedium": opt("masked_card"),
    },
)

# ours: the asynchronous result of an opening, posted to notifyAddr (AES-encrypted).
WALLET_OPEN_NOTIFY: Mapping[str, Field] = {
    "msg_id": req("alnum"),
    "appId": req("app_id"),
    "corpSerno": req("corp_serno"),
    "openStatus": req("text", "0", "1"),
    "acctNo": opt("card"),
    "acctLevel": opt("text", "1", "2", "3"),
    "bindMedium": opt("masked_card"),
    "failReason": opt(),
}

WALLET_PAY = Sheet(
    "wallet_pay",
    "icbc_wallet_pay_path",
    True,
    {
        "appId": req("app_id"),
        "trxAccDate": req("pay_date"),
        "trxAccTime": req("time"),
        "corpDate": req("pay_date"),
        "corpSerno": req("alnum"),
        "orderId": req("alnum"),
        "orderName": req(),
        "orderNote": opt(),
        "baseAcctNo": req("card"),
        "tranAmt": req("amount"),
        "outUserId": req("alnum"),
        "notifyUrl": req("url"),
        "payMode": opt("digits"),
        "trxIp": opt("ip"),
        "trxChannel": opt("text", "02", "03"),
        "subMerRateWx": opt(),
        "subMerRateZfb": opt(),
        "tpAppId": opt(),
        "tpOpenId": opt(),
        "jumpUrl": opt("url"),
        "version": opt(),
    },
    # ours: 1 paid, 2 declined.
    {
        **_ANSWER,
        "orderId": req("alnum"),
        "payStatus": req("text", "1", "2"),
        "trxSerno": opt("alnum"),
        "tranAmt": req("amount"),
        "payTime": opt("compact_time"),
    },
)

# ours: the asynchronous result of a wallet payment, posted to notifyUrl (AES-encrypted).
WALLET_PAY_NOTIFY: Mapping[str, Field] = {
    "msg_id": req("alnum"),
    "appId": req("app_id"),
    "orderId": req("alnum"),
    "payStatus": req("text", "1", "2"),
    "trxSerno": opt("alnum"),
    "tranAmt": req("amount"),
    "payTime": opt("compact_time"),
}

_ACCOUNT_QUERY = {
    "appId": req("app_id"),
    "corpSerno": req("corp_serno"),
    "corpDate": req("date"),
    "acctNo": req("card"),
}

WALLET_BALANCE = Sheet(  # ours
    "wallet_balance",
    "icbc_wallet_balance_path",
    True,
    _ACCOUNT_QUERY,
    {**_ANSWER, "acctNo": req("card"), "balance": req("digits")},
)

WALLET_TRANSACTIONS = Sheet(  # ours
    "wallet_transactions",
    "icbc_wallet_transactions_path",
    True,
    {**_ACCOUNT_QUERY, "pageNo": req("digits"), "pageSize": req("digits")},
    {**_ANSWER, "totalNum": req("digits"), "records": Field("list", True)},
)

_ENTRUST = {
    "appId": req("app_id"),
    "outVendorId": req("alnum"),
    "srVid": req("alnum"),
    "dealFlag": req("text", "0", "1"),  # 0 sign, 1 cancel
    "projectId": req("alnum"),
    "busiCode": req("alnum"),
    "bankNo": opt("digits"),
    "mobile": req("phone"),
    "idNo": req("cert_no"),
    "protocolEndDate": req("date"),
    "protocolLimitAmount": req("fen"),
    "bankFlag": req("text", "0", "1"),
    "cnv2": opt("digits"),
    "expired": opt("digits"),
    **{f"queryItem{n}": opt() for n in range(1, 16)},
}

AUTODEBIT_SMS = Sheet(
    "autodebit_sms",
    "icbc_autodebit_sms_path",
    True,
    {**_ENTRUST, "acctNo": req("card"), "acctName": req(), "idType": req("text", "0")},
    {**_ANSWER, "sendNo": req("digits")},  # ours
)

AUTODEBIT_AGREEMENT = Sheet(
    "autodebit_agreement",
    "icbc_autodebit_agreement_path",
    True,
    {
        **_ENTRUST,
        "accountNo": req("card"),
        "accountName": req(),
        "sendNo": needed_when("dealFlag", ("0",), "digits"),
        "verifyCode": needed_when("dealFlag", ("0",), "sms_code"),
    },
    {**_ANSWER, "srVid": req("alnum"), "protocolNo": opt("alnum")},  # ours
)

AUTODEBIT_PAY = Sheet(  # ours: the password-free debit under a signed agreement
    "autodebit_pay",
    "icbc_autodebit_pay_path",
    False,
    {
        "mer_id": req("alnum"),
        "prtcl_no": req("alnum"),
        "out_trade_no": req("alnum"),
        "total_fee": req("fen"),
        "body": req(),
        "orig_date_time": req("local_iso"),
    },
    {
        **_ANSWER,
        "out_trade_no": req("alnum"),
        "order_id": req("alnum"),
        "pay_status": req("text", "1", "2"),
        "total_amt": req("digits"),
        "pay_time": opt("compact_time"),
    },
)

SHEETS: tuple[Sheet, ...] = (
    PAY,
    QUERY,
    WALLET_OPEN,
    WALLET_SENDMSG,
    WALLET_CHECKSMS,
    WALLET_PAY,
    WALLET_BALANCE,
    WALLET_TRANSACTIONS,
    AUTODEBIT_SMS,
    AUTODEBIT_AGREEMENT,
    AUTODEBIT_PAY,
)


def _pattern(fmt: str, style: PayStyle) -> str:
    if fmt == "amount":
        return FORMATS[PAY_STYLES[style]["amount"]]
    if fmt == "pay_date":
        return FORMATS["compact_date" if style == "compact" else "date"]
    return FORMATS[fmt]


def problems(fields: Mapping[str, Field], values: dict[str, Any], style: PayStyle) -> list[str]:
    """Why ``values`` break ``fields`` (one line per field, naming it); empty when they keep
    to it. An empty string counts as not sent, as ICBC's SDKs drop empty fields."""
    found = []
    for name in sorted(set(values) - set(fields)):
        found.append(f"{name}: not a field of this interface")
    for name, field in fields.items():
        value = values.get(name)
        sent = value is not None and value != ""
        needed = field.required or (
            field.when is not None and str(values.get(field.when[0])) in field.when[1]
        )
        if not sent:
            if needed:
                found.append(f"{name}: required")
            continue
        if field.kind == "list":
            if not isinstance(value, list):
                found.append(f"{name}: must be a list")
            continue
        expected = int if field.kind == "int" else str
        if not isinstance(value, expected) or isinstance(value, bool):
            found.append(f"{name}: must be a JSON {'number' if field.kind == 'int' else 'string'}")
            continue
        shown = str(value)
        if field.values and shown not in field.values:
            found.append(f"{name}: must be one of {'/'.join(field.values)}")
        elif not re.fullmatch(_pattern(field.fmt, style), shown):
            found.append(f"{name}: not in the {field.fmt} format")
    return found
