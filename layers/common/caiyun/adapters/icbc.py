"""ICBC Open Platform (工行 API 开放平台): the client of one app, and the notifies it receives.

The values it returns and the codes it maps are :mod:`caiyun.adapters.icbc_values`.
The wire protocol (signatures, AES, the signed JSON) is :mod:`caiyun.adapters.icbc_protocol`;
the fields of every interface are :mod:`caiyun.adapters.icbc_sheets`, which the local bank
enforces. What we call:

* WeChat Pay acquired by ICBC (``pay``, ``consumepurchase/V1``), built to ICBC's sample:
  ``pay_mode`` 9, ``access_type`` 9, the mini-program's appid as ``shop_appid``, the payer's
  openid, ``mer_prtcl_no``, ``expire_time`` in seconds. ICBC answers with ``wx_data_package``,
  which becomes the arguments of the mini-program's ``wx.requestPayment``
  (:func:`caiyun.adapters.icbc_values.request_payment_of`; public clients read it as ``appid``,
  ``timestamp``, ``noncestr``, ``package``, ``signType``, ``sign``). The order query maps every
  documented ``pay_status`` (0–7).
* The ICBC account itself (a Class I card, or a JFT Class II/III e-wallet): opened and verified
  through ``openacct/V2`` → (``openacctsendmsg`` to text the code again) → ``checksms``, whose
  result may also come as an asynchronous notify; paid from through ``walletorderfin/V1``;
  its balance and details queried; and debited without the payer present only under a signed
  entrusted-debit (代扣) agreement (``entrust/prtl/msg`` texts the code, ``entrust/protocol/mng``
  signs or cancels, the password-free debit charges).

One client per warm container; it holds a pooled HTTP session. Every method raises
:class:`IcbcError` (network trouble and ICBC's busy answers are ``retryable``); an order number
makes payment calls idempotent at ICBC, so a retried charge never pays twice.
"""

from __future__ import annotations

import secrets
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from caiyun.adapters import icbc_sheets as sheets
from caiyun.adapters.icbc_protocol import (
    CHARSET,
    ENCRYPT_AES,
    FORMAT,
    SIGN_ALGS,
    IcbcError,
    IcbcMalformed,
    IcbcSignatureError,
    aes_encrypt,
    business_error,
    compact_json,
    fen_value,
    icbc_time,
    notify_reply_text,
    optional_text,
    parse_icbc_time,
    read_biz,
    required_text,
    return_code_of,
    rsa_verify,
    sign_params,
    signing_string,
    verify_response,
)
from caiyun.adapters.icbc_values import (
    ACCESS_TYPE_MINIPROGRAM,
    PAY_MODE_WECHAT,
    PAY_STATUS,
    AccountClass,
    Notice,
    NoticeKind,
    NotifyPayload,
    OpeningResult,
    PaymentStatus,
    Person,
    account_of,
    corp_serial,
    gender_of,
    pay_amount_fen,
    pay_amount_text,
    request_payment_of,
    transaction_of,
)
from caiyun.clock import SHANGHAI, Clock

if TYPE_CHECKING:
    import requests

    from caiyun.settings import Settings

ENTRUST_SIGN = "0"
ENTRUST_CANCEL = "1"
# JFT fixed codes, as the samples send them.
OPEN_SERVICE = "openaccount"
RESEND_SERVICE = "scode"
CHECK_SERVICE = "scodeverify"
RESEND_TYPE = "5"
CHANNEL_NOT_APP = "2"
ID_CARD = "0"
_DEVICE_ID_CHARS = 32


class IcbcClient:
    """The ICBC Open Platform for one app: payments, the account, and auto-debit."""

    def __init__(
        self, settings: Settings, clock: Clock, session: requests.Session | None = None
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._session = session
        self._base = settings.icbc_gateway.rstrip("/")

    @property
    def settings(self) -> Settings:
        """The settings this client was built with (the sandbox finds its fake bank by them)."""
        return self._settings

    # WeChat Pay through ICBC acquiring.

    def pay_biz(
        self,
        order_no: str,
        amount_fen: int,
        subject: str,
        openid: str,
        expires_in_s: int,
        client_ip: str | None,
    ) -> dict[str, Any]:
        """The ``biz_content`` of a WeChat Pay order, exactly as ICBC's sample builds it."""
        _positive(amount_fen, "amount_fen")
        s = self._settings
        biz = {
            "mer_id": s.icbc_merchant_id,
            "out_trade_no": order_no,
            "pay_mode": PAY_MODE_WECHAT,
            "access_type": ACCESS_TYPE_MINIPROGRAM,
            "mer_prtcl_no": s.icbc_mer_prtcl_no,
            "orig_date_time": self._local().strftime("%Y-%m-%dT%H:%M:%S"),
            "body": subject,
            "fee_type": "001",
            "total_fee": str(amount_fen),
            "mer_url": s.icbc_notify_url,
            "shop_appid": s.wechat_appid,
            "icbc_appid": s.icbc_app_id,
            "open_id": openid,
            "expire_time": str(max(expires_in_s, 1)),
            "notify_type": "HS",
            "result_type": "0",
        }
        if client_ip:
            biz["spbill_create_ip"] = client_ip
        return biz

    def create_wechat_payment(self, biz: dict[str, Any]) -> dict[str, Any]:
        """Place a WeChat Pay order (:meth:`pay_biz`); returns ICBC's ``order_id`` and the
        ``request_payment`` arguments for ``wx.requestPayment``. The same order number and
        amount again returns the same order."""
        reply = self._call(sheets.PAY, biz)
        _same_order(reply, biz["out_trade_no"])
        package = required_text(reply, "wx_data_package")
        return {
            "order_id": required_text(reply, "order_id"),
            "request_payment": request_payment_of(package),
        }

    def query_payment(self, order_no: str) -> PaymentStatus:
        """ICBC's current status of an order (reconciles an order whose notify never came)."""
        s = self._settings
        biz = {
            "mer_id": s.icbc_merchant_id,
            "out_trade_no": order_no,
            "deal_flag": "0",
            "icbc_appid": s.icbc_app_id,
            "mer_prtcl_no": s.icbc_mer_prtcl_no,
        }
        reply = self._call(sheets.QUERY, biz)
        _same_order(reply, order_no)
        status = PAY_STATUS.get(str(reply.get("pay_status")))
        if status is None:
            raise IcbcMalformed("ICBC sent no valid pay_status")
        return PaymentStatus(
            order_no=order_no,
            status=status,
            amount_fen=fen_value(reply.get("total_amt"), "total_amt"),
            transaction_id=optional_text(reply, "order_id"),
            paid_at=parse_icbc_time(reply.get("pay_time")) if status == "paid" else None,
        )

    # Opening and verifying the account (JFT).

    def open_account(
        self,
        serial: str,
        account_class: AccountClass,
        person: Person,
        card_no: str,
        occupation: int,
        id_valid_until: date | None,
        client_ip: str | None,
        device_id: str,
    ) -> str:
        """Ask ICBC to verify the person and open (Class II/III) or bind (Class I, the card
        itself) the account; ICBC texts a code to ``person.phone``. Returns its number
        (``smsSendNo``), which :meth:`confirm_opening` sends back with the code."""
        s = self._settings
        biz: dict[str, Any] = {
            "appId": s.icbc_app_id,
            "corpSerno": serial,
            "bindMedium": card_no,
            "certNo": person.id_number,
            "certType": int(ID_CARD),
            "custName": person.name,
            "mobileNo": person.phone,
            "notifyAddr": s.icbc_notify_url,
            "outServiceCode": OPEN_SERVICE,
            **self._jft_moment(),
            "userProFlag": s.icbc_user_pro_flags[account_class],
            "channelType": CHANNEL_NOT_APP,
            "deviceId": device_id[:_DEVICE_ID_CHARS],
            "occupation": occupation,
            "foreverFlag": 0 if id_valid_until else 1,
            "gender": gender_of(person.id_number),
        }
        if id_valid_until:
            biz["validityPeriod"] = id_valid_until.isoformat()
        if client_ip:
            biz["custIp"] = client_ip
        reply = self._call(sheets.WALLET_OPEN, biz)
        return required_text(reply, "smsSendNo")

    def _about_opening(self, serial: str, service: str) -> dict[str, Any]:
        # A JFT call about an opening: a serial of its own, the opening's as the original.
        app_id = self._settings.icbc_app_id
        return {
            "appId": app_id,
            "corpSerno": corp_serial(app_id),
            "corpSernoOriginal": serial,
            "outServiceCode": service,
            **self._jft_moment(),
        }

    def resend_opening_code(self, serial: str) -> str:
        """Text the opening's code again; returns the new code's number."""
        biz = {**self._about_opening(serial, RESEND_SERVICE), "type": RESEND_TYPE}
        return required_text(self._call(sheets.WALLET_SENDMSG, biz), "smsSendNo")

    def confirm_opening(self, serial: str, sms_send_no: str, sms_code: str) -> OpeningResult:
        """Send back the code ICBC texted; a wrong one is ``SMS_CODE_INVALID``. The account
        may open at once or later (ICBC's result notify, :meth:`read_opening`)."""
        biz = {
            **self._about_opening(serial, CHECK_SERVICE),
            "smsSendNo": sms_send_no,
            "smsScode": sms_code,
        }
        reply = self._call(sheets.WALLET_CHECKSMS, biz)
        if reply.get("corpSernoOriginal") not in (None, "", serial):
            raise IcbcMalformed("ICBC answered about another opening")
        if reply.get("openStatus") == "2":
            return OpeningResult(serial, "pending", None)
        return OpeningResult(serial, "opened", account_of(reply))

    # Paying from the account.

    def pay_from_account(
        self, order_no: str, account_no: str, amount_fen: int, subject: str, payer_id: str
    ) -> PaymentStatus:
        """Debit the payer's ICBC account (e-wallet or Class I card) for an order; a balance
        too small is ``BALANCE_INSUFFICIENT`` and nothing is paid. The same order number
        never debits twice."""
        _positive(amount_fen, "amount_fen")
        s = self._settings
        style = sheets.PAY_STYLES[s.icbc_wallet_pay_style]
        local = self._local()
        biz = {
            "appId": s.icbc_app_id,
            "trxAccDate": local.strftime(style["date"]),
            "trxAccTime": local.strftime("%H:%M:%S"),
            "corpDate": local.strftime(style["date"]),
            "corpSerno": order_no,
            "orderId": order_no,
            "orderName": subject,
            "baseAcctNo": account_no,
            "tranAmt": pay_amount_text(amount_fen, s.icbc_wallet_pay_style),
            "outUserId": payer_id,
            "notifyUrl": s.icbc_notify_url,
        }
        return self._wallet_payment(self._call(sheets.WALLET_PAY, biz), order_no)

    def _wallet_payment(self, biz: dict[str, Any], order_no: str) -> PaymentStatus:
        if biz.get("orderId") not in (None, "", order_no):
            raise IcbcMalformed("ICBC answered about another order")
        return PaymentStatus(
            order_no=order_no,
            status="paid" if biz.get("payStatus") == "1" else "failed",
            amount_fen=pay_amount_fen(biz.get("tranAmt"), self._settings.icbc_wallet_pay_style),
            transaction_id=optional_text(biz, "trxSerno"),
            paid_at=parse_icbc_time(biz.get("payTime")),
        )

    def account_balance(self, account_no: str) -> int:
        """The account's available balance in fen."""
        reply = self._call(sheets.WALLET_BALANCE, self._account_query(account_no))
        return fen_value(reply.get("balance"), "balance")

    def account_transactions(
        self, account_no: str, page: int, page_size: int
    ) -> tuple[list[dict[str, Any]], int]:
        """One page (from 1) of the account's transactions, newest first, and their total.

        Each item: ``transaction_id``, ``direction`` (``in``/``out``), ``amount_fen``,
        ``balance_fen``, ``summary`` and ``occurred_at`` (ISO 8601, +08:00).
        """
        if page < 1 or not 1 <= page_size <= 100:
            raise ValueError("page starts at 1 and page_size is 1 to 100")
        biz = {**self._account_query(account_no), "pageNo": str(page), "pageSize": str(page_size)}
        reply = self._call(sheets.WALLET_TRANSACTIONS, biz)
        records = reply.get("records")
        if not isinstance(records, list):
            raise IcbcMalformed("ICBC sent no records")
        total = fen_value(reply.get("totalNum"), "totalNum")
        return [transaction_of(record) for record in records], total

    # Auto-debit (代扣): the entrusted-debit agreement and the debit under it.

    def autodebit_send_code(
        self, agreement_id: str, account_no: str, person: Person, limit_fen: int, end: date
    ) -> str:
        """Start signing an entrusted-debit agreement: ICBC texts a code to the person's
        bank phone. Returns the code's number (``sendNo``)."""
        biz = {
            **self._entrust(agreement_id, ENTRUST_SIGN, person, limit_fen, end),
            "acctNo": account_no,
            "acctName": person.name,
            "idType": ID_CARD,
        }
        return required_text(self._call(sheets.AUTODEBIT_SMS, biz), "sendNo")

    def autodebit_sign(
        self,
        agreement_id: str,
        account_no: str,
        person: Person,
        limit_fen: int,
        end: date,
        send_no: str,
        code: str,
    ) -> str:
        """Sign the agreement with the code ICBC texted; returns ICBC's agreement number."""
        biz = {
            **self._entrust(agreement_id, ENTRUST_SIGN, person, limit_fen, end),
            "accountNo": account_no,
            "accountName": person.name,
            "sendNo": send_no,
            "verifyCode": code,
        }
        reply = self._call(sheets.AUTODEBIT_AGREEMENT, biz)
        return optional_text(reply, "protocolNo") or required_text(reply, "srVid")

    def autodebit_cancel(
        self, agreement_id: str, account_no: str, person: Person, limit_fen: int, end: date
    ) -> None:
        """Cancel the agreement; cancelling it again is harmless."""
        biz = {
            **self._entrust(agreement_id, ENTRUST_CANCEL, person, limit_fen, end),
            "accountNo": account_no,
            "accountName": person.name,
        }
        self._call(sheets.AUTODEBIT_AGREEMENT, biz)

    def _entrust(
        self, agreement_id: str, deal: str, person: Person, limit_fen: int, end: date
    ) -> dict[str, Any]:
        _positive(limit_fen, "limit_fen")
        s = self._settings
        return {
            "appId": s.icbc_app_id,
            "outVendorId": s.icbc_vendor_id,
            "srVid": agreement_id,
            "dealFlag": deal,
            "projectId": s.icbc_entrust_project_id,
            "busiCode": s.icbc_entrust_busi_code,
            "mobile": person.phone,
            "idNo": person.id_number,
            "protocolEndDate": end.isoformat(),
            "protocolLimitAmount": str(limit_fen),
            "bankFlag": "1",
        }

    def autodebit_charge(
        self, agreement_no: str, order_no: str, amount_fen: int, subject: str
    ) -> PaymentStatus:
        """Charge the account under an agreement, without the payer present.

        A decline (balance too small) is ``status="failed"``, not an error; a cancelled or
        lapsed agreement is ``AGREEMENT_INVALID``, a charge over its limit
        ``AUTODEBIT_LIMIT_EXCEEDED``. The same order number never charges twice.
        """
        _positive(amount_fen, "amount_fen")
        biz = {
            "mer_id": self._settings.icbc_merchant_id,
            "prtcl_no": agreement_no,
            "out_trade_no": order_no,
            "total_fee": str(amount_fen),
            "body": subject,
            "orig_date_time": self._local().strftime("%Y-%m-%dT%H:%M:%S"),
        }
        reply = self._call(sheets.AUTODEBIT_PAY, biz)
        _same_order(reply, order_no)
        paid = reply.get("pay_status") == "1"
        return PaymentStatus(
            order_no=order_no,
            status="paid" if paid else "failed",
            amount_fen=fen_value(reply.get("total_amt"), "total_amt"),
            transaction_id=optional_text(reply, "order_id"),
            paid_at=parse_icbc_time(reply.get("pay_time")) if paid else None,
        )

    # Notifies.

    def verify_notify(self, form: dict[str, str]) -> Notice:
        """Verify ICBC's signature on a notify form, with the algorithm its ``sign_type``
        names (exactly ``RSA`` or ``RSA2``), then read (and decrypt) its ``biz_content``.

        Raises :class:`IcbcSignatureError` (no, forged or altered signature, or a sign type
        that is neither) or :class:`IcbcMalformed` (not for this app, not about an interface
        we call, or not readable).
        """
        s = self._settings
        signature = form.get("sign")
        if not isinstance(signature, str) or not signature:
            raise IcbcSignatureError("the notify is not signed")
        if any(not isinstance(v, str) for v in form.values()):
            raise IcbcMalformed("notify fields must be text")
        alg = SIGN_ALGS.get(form.get("sign_type", ""))
        if alg is None:
            shown = "".join(c for c in form.get("sign_type", "")[:16] if c.isalnum())
            raise IcbcError("SIGN_TYPE_REFUSED", f"the notify's sign_type {shown!r} is refused")
        text = signing_string(s.icbc_notify_sign_path, form)
        if not rsa_verify(text, signature, s.icbc_gateway_public_key, alg):
            raise IcbcSignatureError("the notify signature does not verify")
        if form.get("app_id") != s.icbc_app_id:
            raise IcbcMalformed("the notify is for another app")
        kinds: dict[str, NoticeKind] = {
            s.icbc_pay_path: "payment",
            s.icbc_wallet_pay_path: "wallet_payment",
            s.icbc_wallet_open_path: "wallet_open",
        }
        kind = kinds.get(form.get("api", ""))
        if kind is None:
            raise IcbcMalformed("the notify is about an interface we did not call")
        encrypt_type = form.get("encrypt_type", "")
        if encrypt_type not in ("", ENCRYPT_AES):
            raise IcbcMalformed("the notify's encrypt_type is not AES")
        encrypted = encrypt_type == ENCRYPT_AES
        biz = read_biz(form.get("biz_content", ""), encrypted, self._aes_key(), "biz_content")
        msg_id = biz.get("msg_id")
        return Notice(kind, msg_id if isinstance(msg_id, str) else "", biz, encrypted)

    def read_payment(self, notice: Notice) -> NotifyPayload:
        """The payment result a verified notify carries (WeChat Pay or account payment)."""
        biz = notice.biz
        if notice.kind == "wallet_payment":
            status = self._wallet_payment(biz, required_text(biz, "orderId"))
            return NotifyPayload(
                msg_id=notice.msg_id,
                order_no=status.order_no,
                amount_fen=status.amount_fen,
                success=status.status == "paid",
                transaction_id=status.transaction_id,
                paid_at=status.paid_at,
                raw=biz,
            )
        mer_id = biz.get("mer_id")
        if self._settings.icbc_merchant_id and mer_id not in (
            None,
            "",
            self._settings.icbc_merchant_id,
        ):
            raise IcbcMalformed("the notify is for another merchant")
        return NotifyPayload(
            msg_id=notice.msg_id,
            order_no=required_text(biz, "out_trade_no"),
            amount_fen=fen_value(biz.get("total_amt"), "total_amt"),
            success=return_code_of(biz) == 0,
            transaction_id=optional_text(biz, "order_id"),
            paid_at=parse_icbc_time(biz.get("pay_time")),
            raw=biz,
        )

    def read_opening(self, notice: Notice) -> OpeningResult:
        """The opening result a verified wallet-opening notify carries."""
        biz = notice.biz
        serial = required_text(biz, "corpSerno")
        if biz.get("openStatus") == "0":
            return OpeningResult(serial, "opened", account_of(biz))
        return OpeningResult(serial, "refused", None, optional_text(biz, "failReason"))

    def notify_reply(self, success: bool, msg_id: str, message: str, encrypted: bool) -> str:
        """The signed body to answer a notify with (encrypted when the notify was); ICBC
        resends until it reads success."""
        biz = {"return_code": 0 if success else 1, "return_msg": message, "msg_id": msg_id}
        return notify_reply_text(
            biz,
            self._private_key_pem(),
            self._settings.icbc_sign_type,
            self._aes_key() if encrypted else None,
        )

    # Transport.

    def _private_key_pem(self) -> str:
        return self._settings.icbc_private_key.get_secret_value()

    def _aes_key(self) -> str | None:
        return self._settings.icbc_aes_key.get_secret_value() or None

    def _now(self) -> datetime:
        moment = self._clock.now()
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)

    def _local(self) -> datetime:
        return self._now().astimezone(SHANGHAI)

    def _jft_moment(self) -> dict[str, str]:
        local = self._local()
        day = local.strftime("%Y-%m-%d")
        return {"trxAccDate": day, "trxAccTime": local.strftime("%H:%M:%S"), "corpDate": day}

    def _account_query(self, account_no: str) -> dict[str, str]:
        s = self._settings
        return {
            "appId": s.icbc_app_id,
            "corpSerno": corp_serial(s.icbc_app_id),
            "corpDate": self._local().strftime("%Y-%m-%d"),
            "acctNo": account_no,
        }

    def _http(self) -> requests.Session:
        if self._session is None:
            import requests

            self._session = requests.Session()
        return self._session

    def _call(self, sheet: sheets.Sheet, biz: dict[str, Any]) -> dict[str, Any]:
        import requests

        s = self._settings
        name = sheet.name
        url = self._base + getattr(s, sheet.path_setting)
        msg_id = secrets.token_hex(16)
        params = {
            "app_id": s.icbc_app_id,
            "msg_id": msg_id,
            "format": FORMAT,
            "charset": CHARSET,
            "sign_type": s.icbc_sign_type,
            "timestamp": icbc_time(self._now()),
            "biz_content": compact_json(biz),
        }
        aes_key = self._aes_key()
        if sheet.encrypted:
            if aes_key is None:
                raise IcbcError("CONFIG", f"ICBC {name} needs CAIYUN_ICBC_AES_KEY")
            params["encrypt_type"] = ENCRYPT_AES
            params["biz_content"] = aes_encrypt(params["biz_content"], aes_key)
        # Signed over the full URI path, so a gateway base with a path prefix still verifies.
        params["sign"] = sign_params(
            urlsplit(url).path, params, self._private_key_pem(), s.icbc_sign_type
        )
        try:
            response = self._http().post(
                url,
                data=params,
                headers={"Content-Type": f"application/x-www-form-urlencoded; charset={CHARSET}"},
                timeout=s.icbc_timeout_s,
            )
        except requests.RequestException as error:
            # The exception text can echo the request; report its type only, without a cause.
            raise IcbcError(
                "NETWORK_ERROR", f"ICBC {name} unreachable ({type(error).__name__})", True
            ) from None
        if response.status_code >= 500:
            raise IcbcError(
                "GATEWAY_UNAVAILABLE", f"ICBC {name} answered HTTP {response.status_code}", True
            )
        if response.status_code != 200:
            raise IcbcError("HTTP_ERROR", f"ICBC {name} answered HTTP {response.status_code}")
        try:
            body = response.content.decode("utf-8")
        except UnicodeDecodeError:
            raise IcbcMalformed(f"ICBC {name} answered with something other than UTF-8") from None
        reply = verify_response(body, s.icbc_gateway_public_key, s.icbc_response_sign_alg, aes_key)
        echoed = reply.get("msg_id")
        if echoed not in (None, "", msg_id):
            # A signed reply to another request, replayed: never take it for this one's.
            raise IcbcSignatureError(f"ICBC {name} answered another request")
        code = return_code_of(reply)
        if code != 0:
            raise business_error(code, reply.get("return_msg"))
        return reply


def _positive(value: int, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive number of fen")


def _same_order(reply: dict[str, Any], order_no: str) -> None:
    echoed = reply.get("out_trade_no")
    if echoed not in (None, "", order_no):
        raise IcbcMalformed("ICBC answered about another order")
