"""A local ICBC Open Platform gateway on loopback, for `caiyun dev` and the tests.

It refuses what ICBC would refuse: every request is checked against the field sheet of its
interface (:mod:`caiyun.adapters.icbc_sheets`: unknown, missing, mistyped or misformatted
fields), must carry the sign type the app registered (``registered_sign_type``) and verify with
the merchant public key under it, must be AES-encrypted where the interface requires it, and
may use a ``msg_id`` once. It answers like ICBC: signed with its gateway key (1024 bits by
default, as in every ICBC sample) with SHA1withRSA, encrypted for the JFT interfaces, and only
with the fields its sheets list. Its notifies are signed with ``sign_type=RSA`` (SHA1), as the
live gateway signs them, over the notify URL's path.

This module holds the gateway and the notifies it sends; the WeChat Pay interfaces are
:mod:`caiyun.sandbox.icbc_wechat_pay`, the account and auto-debit ones
:mod:`caiyun.sandbox.icbc_accounts`, and the bank behind them all is
:class:`caiyun.sandbox.icbc_bank.SandboxBank` (accounts, openings, transactions, orders,
agreements): cards beginning ``6222`` are ICBC Class I debit cards; other Luhn-valid
cards belong to other banks; ID numbers carry a valid GB 11643 check digit. Opening texts a code
to the bank phone (the sandbox SMS outbox); a Class I card holder verifies with the card, which
is then the account paid from; a Class II or III e-wallet gets a number of its own. Every new
account holds the bank's ``OPENING_BALANCE_FEN``. Paying from the account (``wallet_pay``) and
debits under an agreement move the balance and appear in the account's details; a WeChat Pay
order is settled by :meth:`FakeIcbc.complete` (the payer's WeChat balance is not the bank's).
An unpaid WeChat order closes at its ``expire_time`` on the sandbox clock.

State lives in the ``sandbox_icbc_*`` collections of the database passed in, so it persists
with the sandbox. Like our own collections they never hold a card, ID or account number in
clear: accounts are kept under the SHA-256 of their number (the bank's own e-wallet numbers
aside), cards and ID numbers as hashes and masks.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, urlsplit

from pydantic import SecretStr
from pymongo.errors import DuplicateKeyError

from caiyun.adapters import icbc_sheets as sheets
from caiyun.adapters.icbc_protocol import (
    CHARSET,
    ENCRYPT_AES,
    FORMAT,
    GATEWAY_REPLY_ALG,
    RETURN_CODE_OF,
    SIGN_ALGS,
    IcbcError,
    SignAlg,
    SignType,
    aes_decrypt,
    aes_encrypt,
    compact_json,
    generate_private_key_pem,
    icbc_time,
    parse_icbc_time,
    public_key_pem,
    rsa_sign,
    rsa_verify,
    sign_params,
    signing_string,
)
from caiyun.adapters.sms import SandboxSms
from caiyun.clock import Clock
from caiyun.data.schema import declare
from caiyun.errors import AppError
from caiyun.sandbox.icbc_accounts import LEVEL_CODES, AccountInterfaces
from caiyun.sandbox.icbc_bank import Refusal, SandboxBank, digits
from caiyun.sandbox.icbc_wechat_pay import WechatPayInterfaces
from caiyun.sandbox.loopback import LoopbackService
from caiyun.settings import Settings

Reply = dict[str, Any]

# Each msg_id is taken once: a replayed request is refused.
MESSAGES = declare("sandbox_icbc_messages")

SANDBOX_APP_ID = "10000000000000008888"
SANDBOX_MERCHANT_ID = "020000000000888"
SANDBOX_PRTCL_NO = "0200000000008880201"
SANDBOX_VENDOR_ID = "CAIYUN0001"
SANDBOX_PROJECT_ID = "PJ140014011000008888"
SANDBOX_BUSI_CODE = "10002"
# A sandbox AES key (base64 of 16 bytes): the JFT samples' keys are AES-128.
SANDBOX_AES_KEY = "Y2FpeXVuLXNhbmRib3gtIQ=="
NOTIFY_PATH = "/icbc/notify"
GATEWAY_KEY_BITS = 1024

_GATEWAY_KEY_FILE = "gateway_private.pem"
_MERCHANT_KEY_FILE = "merchant_private.pem"
_NOTIFY_TIMEOUT_S = 10.0
_REQUIRED_FIELDS = ("app_id", "msg_id", "format", "charset", "sign_type", "timestamp", "sign")
_running: dict[str, FakeIcbc] = {}
_running_lock = threading.Lock()


def default_paths() -> dict[str, str]:
    """The interface paths as the Settings defaults name them, by sheet name."""
    return {s.name: Settings.model_fields[s.path_setting].default for s in sheets.SHEETS}


def running_fake(gateway_url: str) -> FakeIcbc | None:
    """The FakeIcbc serving ``gateway_url`` in this process, if any."""
    with _running_lock:
        return _running.get(gateway_url.rstrip("/"))


def complete(
    services: Any, server_base_url: str, order_no: str, result: Literal["success", "fail"]
) -> dict[str, Any]:
    """Settle ``order_no`` in the ICBC sandbox and deliver its signed notify to the server.

    The fake bank is the one serving ``services.icbc.settings.icbc_gateway``. Returns what
    :meth:`FakeIcbc.complete` returns. Raises AppError NOT_FOUND (no such order, or no fake bank
    running) or CONFLICT (the order already ended otherwise).
    """
    fake = running_fake(services.icbc.settings.icbc_gateway)
    if fake is None:
        raise AppError("NOT_FOUND", "工行沙箱未运行")
    return fake.complete(server_base_url, order_no, result)


class FakeIcbc(LoopbackService):
    """A fake ICBC gateway over ``db`` and ``clock`` (share the sandbox's, so time rules agree).

    Keys: ``gateway_private_key`` / ``merchant_private_key`` when given (tests reuse keys to stay
    fast), else read from ``key_dir`` (``gateway_private.pem``, ``merchant_private.pem``), else
    generated (the gateway's with :data:`GATEWAY_KEY_BITS`) and written to ``key_dir`` when one
    is given, so restarts keep them. The app's registration: ``registered_sign_type`` (what
    every request must use), the AES key, the wallet-pay style. ``notify_sign_type`` is what
    ICBC signs notifies with (RSA); ``notify_signs_api_path`` signs them over the API's path
    instead of the notify URL's, the other behaviour seen in the wild. ``openings_pending``
    answers a confirmed opening "still being opened" and leaves the result to
    :meth:`deliver_opening`'s notify.
    """

    thread_name = "fake-icbc"

    def __init__(
        self,
        db: Any,
        clock: Clock,
        *,
        key_dir: str | Path | None = None,
        gateway_private_key: str | None = None,
        merchant_private_key: str | None = None,
        app_id: str = SANDBOX_APP_ID,
        merchant_id: str = SANDBOX_MERCHANT_ID,
        registered_sign_type: SignType = "RSA2",
        notify_sign_type: SignType = "RSA",
        reply_sign_alg: SignAlg = GATEWAY_REPLY_ALG,
        aes_key: str = SANDBOX_AES_KEY,
        wallet_pay_style: sheets.PayStyle = "compact",
        user_pro_flags: dict[str, str] | None = None,
        notify_signs_api_path: bool = False,
        openings_pending: bool = False,
        paths: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        self.db = db
        self.clock = clock
        self.app_id = app_id
        self.merchant_id = merchant_id
        self.registered_sign_type: SignType = registered_sign_type
        self.notify_sign_type: SignType = notify_sign_type
        self.reply_sign_alg: SignAlg = reply_sign_alg
        self.aes_key = aes_key
        self.wallet_pay_style: sheets.PayStyle = wallet_pay_style
        self.user_pro_flags = user_pro_flags or dict(
            Settings.model_fields["icbc_user_pro_flags"].default
        )
        self.notify_signs_api_path = notify_signs_api_path
        self.openings_pending = openings_pending
        self.paths = {**default_paths(), **(paths or {})}
        folder = Path(key_dir) if key_dir is not None else None
        self._gateway_key = gateway_private_key or _load_or_create_key(
            folder, _GATEWAY_KEY_FILE, GATEWAY_KEY_BITS
        )
        self._merchant_key = merchant_private_key or _load_or_create_key(
            folder, _MERCHANT_KEY_FILE, 2048
        )
        self.gateway_public_key = public_key_pem(self._gateway_key)
        self.merchant_public_key = public_key_pem(self._merchant_key)
        self._sms = SandboxSms(db, clock)
        self.bank = SandboxBank(db, clock, self._sms)
        self._accounts = AccountInterfaces(
            self.bank,
            user_pro_flags=self.user_pro_flags,
            wallet_pay_style=wallet_pay_style,
            openings_pending=openings_pending,
        )
        self._wechat_pay = WechatPayInterfaces(self.bank, merchant_id=merchant_id)
        endpoints: dict[str, Callable[[Reply], Reply]] = {
            "pay": self._wechat_pay.pay,
            "query": self._wechat_pay.query,
            "wallet_open": self._accounts.wallet_open,
            "wallet_sendmsg": self._accounts.wallet_sendmsg,
            "wallet_checksms": self._accounts.wallet_checksms,
            "wallet_pay": self._accounts.wallet_pay,
            "wallet_balance": self._accounts.wallet_balance,
            "wallet_transactions": self._accounts.wallet_transactions,
            "autodebit_sms": self._accounts.autodebit_sms,
            "autodebit_agreement": self._accounts.autodebit_agreement,
            "autodebit_pay": self._accounts.autodebit_pay,
        }
        self._routes = {self.paths[s.name]: (s, endpoints[s.name]) for s in sheets.SHEETS}
        self._failures: list[tuple[str, str | None]] = []
        self._lock = threading.RLock()

    # Wiring.

    def settings_overrides(self) -> dict[str, Any]:
        """The Settings values that point a back end at this fake bank (call after start)."""
        return {
            "icbc_gateway": self.url,
            "icbc_app_id": self.app_id,
            "icbc_merchant_id": self.merchant_id,
            "icbc_mer_prtcl_no": SANDBOX_PRTCL_NO,
            "icbc_vendor_id": SANDBOX_VENDOR_ID,
            "icbc_entrust_project_id": SANDBOX_PROJECT_ID,
            "icbc_entrust_busi_code": SANDBOX_BUSI_CODE,
            "icbc_sign_type": self.registered_sign_type,
            "icbc_private_key": SecretStr(self._merchant_key),
            "icbc_gateway_public_key": self.gateway_public_key,
            "icbc_aes_key": SecretStr(self.aes_key),
            "icbc_response_sign_alg": self.reply_sign_alg,
            "icbc_wallet_pay_style": self.wallet_pay_style,
            "icbc_user_pro_flags": dict(self.user_pro_flags),
            "icbc_notify_sign_path": self.paths["pay"]
            if self.notify_signs_api_path
            else NOTIFY_PATH,
            **{s.path_setting: self.paths[s.name] for s in sheets.SHEETS},
        }

    def started(self) -> None:
        """Register this bank so ``complete`` finds it by the gateway URL."""
        with _running_lock:
            _running[self.url] = self

    def stopping(self) -> None:
        """Forget this bank's registration."""
        with _running_lock:
            _running.pop(self.url, None)

    # Steering, for tests and demos.

    def fail_next(self, name: str, path: str | None = None) -> None:
        """Answer the next verified request (to ``path``, or any) with the refusal ``name``."""
        if name not in RETURN_CODE_OF:
            raise ValueError(f"unknown refusal {name!r}")
        with self._lock:
            self._failures.append((name, path))

    def set_balance(self, account_no: str, balance_fen: int) -> None:
        """Set an account's balance (to make a payment or an auto-debit decline, say)."""
        self.bank.set_balance(account_no, balance_fen)

    def balance(self, account_no: str) -> int:
        """An account's balance in fen."""
        return self.bank.balance(account_no)

    def set_status(self, order_no: str, status: str) -> None:
        """Put an order in any documented state (a refund or a revocation made at the bank's
        counter, say), as the order query will then report it."""
        self._wechat_pay.set_status(order_no, status)

    # Settling a WeChat Pay order and delivering its notify.

    def settle(self, order_no: str, result: Literal["success", "fail"]) -> dict[str, Any]:
        """Mark a pending WeChat Pay order paid or failed; repeating the same result is allowed
        (ICBC re-sends notifies). Raises AppError NOT_FOUND or CONFLICT."""
        with self._lock:
            return self._wechat_pay.settle(order_no, result)

    def notify_form(self, order: dict[str, Any], notify_url: str) -> dict[str, str]:
        """The signed form ICBC posts to ``notify_url`` about a settled WeChat Pay order."""
        biz = self._wechat_pay.notify_biz(order)
        self._own_fields(sheets.PAY_NOTIFY, biz, "pay notify")
        return self.sign_notify(self.paths["pay"], biz, notify_url)

    def sign_notify(
        self, api: str, biz: dict[str, Any], notify_url: str, encrypted: bool = False
    ) -> dict[str, str]:
        """The signed form ICBC posts to ``notify_url`` about a call to the interface ``api``
        (its path), ``biz`` AES-encrypted when ``encrypted``."""
        text = compact_json(biz)
        form = {
            "from": "icbc-api",
            "api": api,
            "app_id": self.app_id,
            "charset": CHARSET,
            "format": FORMAT,
            "encrypt_type": ENCRYPT_AES if encrypted else "",
            "timestamp": icbc_time(self.clock.now()),
            "sign_type": self.notify_sign_type,
            "biz_content": aes_encrypt(text, self.aes_key) if encrypted else text,
        }
        path = self.paths["pay"] if self.notify_signs_api_path else urlsplit(notify_url).path
        form["sign"] = sign_params(path, form, self._gateway_key, self.notify_sign_type)
        return form

    def complete(
        self, server_base_url: str, order_no: str, result: Literal["success", "fail"]
    ) -> dict[str, Any]:
        """Settle the order and POST its notify to ``{server_base_url}/icbc/notify``.

        Returns ``{order_no, status, notify_url, http_status, reply, reply_verified,
        acknowledged}`` (see :meth:`post_notify`).
        """
        order = self.settle(order_no, result)
        notify_url = server_base_url.rstrip("/") + NOTIFY_PATH
        outcome = self.post_notify(notify_url, self.notify_form(order, notify_url))
        self._wechat_pay.notify_delivered(order_no, outcome["acknowledged"])
        return {"order_no": order_no, "status": order["status"], **outcome}

    def opening_notify(self, serial: str, notify_url: str) -> dict[str, str]:
        """Open the account of a confirmed opening left pending; the signed, AES-encrypted
        form ICBC posts to ``notify_url`` with the result."""
        opening = self.bank.confirmed_opening(serial)
        if opening is None:
            raise AppError("NOT_FOUND", "工行沙箱中没有这笔已验证的开户")
        account = self.bank.open(opening)
        biz = {
            "msg_id": digits(27),
            "appId": self.app_id,
            "corpSerno": serial,
            "openStatus": "0",
            "acctNo": account["wallet_no"] or "",
            "acctLevel": LEVEL_CODES[account["account_class"]],
            "bindMedium": account["bound_card_masked"],
        }
        self._own_fields(sheets.WALLET_OPEN_NOTIFY, biz, "opening notify")
        return self.sign_notify(self.paths["wallet_open"], biz, notify_url, encrypted=True)

    def deliver_opening(self, server_base_url: str, serial: str) -> dict[str, Any]:
        """:meth:`opening_notify`, POSTed to the server's notify URL; returns
        :meth:`post_notify`'s outcome."""
        notify_url = server_base_url.rstrip("/") + NOTIFY_PATH
        return self.post_notify(notify_url, self.opening_notify(serial, notify_url))

    def post_notify(self, notify_url: str, form: dict[str, str]) -> dict[str, Any]:
        """POST a notify form and read the answer as ICBC does: ``reply`` (parsed, decrypted
        when the notify was encrypted; its text when not JSON; None when unreachable),
        ``reply_verified`` (signed by the merchant key with the registered sign type over
        the documented span) and ``acknowledged`` (verified, and return_code 0)."""
        import requests

        outcome: dict[str, Any] = {
            "notify_url": notify_url,
            "http_status": None,
            "reply": None,
            "reply_verified": False,
            "acknowledged": False,
        }
        # Posted without the lock: the endpoint may call this bank back while it answers.
        try:
            response = requests.post(notify_url, data=form, timeout=_NOTIFY_TIMEOUT_S)
        except requests.RequestException:
            return outcome
        text = response.content.decode("utf-8", errors="replace")
        try:
            reply: Any = json.loads(text)
        except ValueError:
            reply = text
        verified = self.verify_reply(text)
        biz = reply.get("response_biz_content") if isinstance(reply, dict) else None
        if verified and isinstance(biz, str) and form.get("encrypt_type") == ENCRYPT_AES:
            try:
                biz = json.loads(aes_decrypt(biz, self.aes_key))
            except (IcbcError, ValueError):
                biz = None
            reply["response_biz_content"] = biz
        acknowledged = verified and isinstance(biz, dict) and str(biz.get("return_code")) == "0"
        outcome.update(
            http_status=response.status_code,
            reply=reply,
            reply_verified=verified,
            acknowledged=acknowledged,
        )
        return outcome

    def verify_reply(self, text: str) -> bool:
        """Whether a notify answer names the registered sign type and is signed by the
        merchant key with it over the text between the first ``{`` and ``,"sign"``."""
        body = text.strip()
        cut = body.rfind(',"sign":')
        if not body.startswith("{") or not body.endswith("}") or cut < 0:
            return False
        try:
            envelope = json.loads(body)
        except ValueError:
            return False
        if not isinstance(envelope, dict) or envelope.get("sign_type") != self.registered_sign_type:
            return False
        signature = envelope.get("sign")
        if not isinstance(signature, str):
            return False
        alg = SIGN_ALGS[self.registered_sign_type]
        return rsa_verify(body[1:cut], signature, self.merchant_public_key, alg)

    # The gateway.

    def handle(self, path: str, body: bytes) -> tuple[int, str]:
        """One request's HTTP status and body (signed JSON for every known interface)."""
        route = self._routes.get(path)
        if route is None:
            return 404, json.dumps({"return_code": 404, "return_msg": "api not found"})
        sheet, endpoint = route
        msg_id = ""
        encrypted = False
        try:
            params = _form(body)
            msg_id = params.get("msg_id", "")
            biz = self._authenticate(path, sheet, params)
            encrypted = sheet.encrypted
            with self._lock:
                self._injected_failure(path)
                reply = endpoint(biz)
            reply = {"return_code": 0, "return_msg": "success", **reply, "msg_id": msg_id}
            self._own_fields(sheet.response, reply, f"{sheet.name} answer")
        except Refusal as refusal:
            reply = {"return_code": refusal.return_code, "return_msg": refusal.message}
            reply["msg_id"] = msg_id
        return 200, self._signed(reply, encrypted)

    def _own_fields(self, fields: Any, biz: dict[str, Any], what: str) -> None:
        # The fake answering outside its own sheets is a bug of the fake, not a refusal.
        found = sheets.problems(fields, biz, self.wallet_pay_style)
        if found:
            raise RuntimeError(f"the ICBC sandbox's {what} breaks its sheet: {found}")

    def _signed(self, biz: Reply, encrypted: bool) -> str:
        # Spaced and unicode as is: a client that re-serialised before verifying would fail.
        text = json.dumps(biz, ensure_ascii=False)
        if encrypted:
            text = json.dumps(aes_encrypt(compact_json(biz), self.aes_key))
        signature = rsa_sign(text, self._gateway_key, self.reply_sign_alg)
        return '{"response_biz_content": ' + text + ', "sign": ' + json.dumps(signature) + "}"

    def _authenticate(self, path: str, sheet: sheets.Sheet, params: dict[str, str]) -> Reply:
        missing = [name for name in (*_REQUIRED_FIELDS, "biz_content") if not params.get(name)]
        if missing:
            raise Refusal("REQUEST_INVALID", "missing " + ",".join(missing))
        if params["app_id"] != self.app_id:
            raise Refusal("APP_UNKNOWN", "app_id not registered")
        if params["sign_type"] != self.registered_sign_type:
            raise Refusal(
                "SIGNATURE_REJECTED",
                f"sign_type must be {self.registered_sign_type}, as the app is registered",
            )
        text = signing_string(path, params)
        alg = SIGN_ALGS[self.registered_sign_type]
        if not rsa_verify(text, params["sign"], self.merchant_public_key, alg):
            raise Refusal("SIGNATURE_REJECTED", "sign verify failed")
        if params["format"] != FORMAT or params["charset"] != CHARSET:
            raise Refusal("REQUEST_INVALID", "format must be json and charset UTF-8")
        if parse_icbc_time(params["timestamp"]) is None or len(params["timestamp"]) != 19:
            raise Refusal("REQUEST_INVALID", "timestamp must be yyyy-MM-dd HH:mm:ss")
        try:
            self.db[MESSAGES].insert_one({"_id": params["msg_id"], "at": self.clock.now()})
        except DuplicateKeyError:
            raise Refusal("MSG_ID_REPEATED", "msg_id already used") from None
        biz = self._biz(sheet, params)
        found = sheets.problems(sheet.request, biz, self.wallet_pay_style)
        if found:
            raise Refusal("REQUEST_INVALID", "; ".join(found))
        self._ours(biz)
        return biz

    def _biz(self, sheet: sheets.Sheet, params: dict[str, str]) -> Reply:
        encrypt_type = params.get("encrypt_type", "")
        if sheet.encrypted and encrypt_type != ENCRYPT_AES:
            raise Refusal("REQUEST_INVALID", "biz_content must be AES-encrypted")
        if not sheet.encrypted and encrypt_type:
            raise Refusal("REQUEST_INVALID", "this interface takes biz_content in clear")
        text = params["biz_content"]
        try:
            if sheet.encrypted:
                text = aes_decrypt(text, self.aes_key)
            biz = json.loads(text)
        except (IcbcError, ValueError):
            biz = None
        if not isinstance(biz, dict):
            raise Refusal("REQUEST_INVALID", "biz_content is not a JSON object")
        return biz

    def _ours(self, biz: Reply) -> None:
        expected = {
            "mer_id": self.merchant_id,
            "icbc_appid": self.app_id,
            "appId": self.app_id,
            "mer_prtcl_no": SANDBOX_PRTCL_NO,
            "outVendorId": SANDBOX_VENDOR_ID,
            "projectId": SANDBOX_PROJECT_ID,
            "busiCode": SANDBOX_BUSI_CODE,
        }
        for name, value in expected.items():
            if name in biz and biz[name] != value:
                raise Refusal("REQUEST_INVALID", f"{name} not registered for this app")

    def _injected_failure(self, path: str) -> None:
        for i, (name, only) in enumerate(self._failures):
            if only is None or only == path:
                del self._failures[i]
                raise Refusal(name, "injected failure")


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        fake = cast(FakeIcbc, self.server.fake)  # type: ignore[attr-defined]
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, text = fake.handle(urlsplit(self.path).path, body)
        payload = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        self.send_response(405)
        self.send_header("Allow", "POST")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        # Forms carry ID, card and phone numbers; keep request lines off the console.
        pass


def _load_or_create_key(folder: Path | None, filename: str, bits: int) -> str:
    if folder is not None and (folder / filename).exists():
        return (folder / filename).read_text(encoding="ascii")
    pem = generate_private_key_pem(bits)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        temporary = folder / f"{filename}.{os.getpid()}.tmp"
        # Owner-only from the first byte: it is a private key, even if a sandbox one.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(pem)
        os.replace(temporary, folder / filename)
    return pem


def _form(body: bytes) -> dict[str, str]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise Refusal("REQUEST_INVALID", "body is not UTF-8") from None
    form: dict[str, str] = {}
    for key, value in parse_qsl(text, keep_blank_values=True):
        if key in form:
            raise Refusal("REQUEST_INVALID", f"field {key} repeated")
        form[key] = value
    return form


FakeIcbc.handler_class = _Handler
