"""Configuration, read once from environment variables.

Two profiles share one model: ``sandbox`` (the default; local keys and fake services) and
``production`` (every secret must come from the environment and be strong enough, or the
function refuses to start).
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from caiyun.adapters.icbc_protocol import aes_problems, key_problems
from caiyun.adapters.secrets import SecretStoreError, read_settings_secret
from caiyun.errors import SettingsUnavailable

# Used only in the sandbox profile so `caiyun dev` works with no set-up; production rejects them.
_SANDBOX_TOKEN_SECRET = "sandbox-token-secret-not-for-production-use-0001"
_SANDBOX_CODE_KEY = "sandbox-code-hash-key-not-for-production-use-0001"
_SANDBOX_DATA_KEY = base64.b64encode(b"sandbox-data-key-0123456789abcde").decode()
_MIN_SECRET_LEN = 32
# A secret drawn at random (secrets.token_urlsafe, token_hex) has many distinct characters and
# no period; a typed one ('a'*32, 'password'*4) fails one of the two.
_MIN_DISTINCT_CHARS = 8
# The formats the consoles issue: a mini-program AppSecret is 32 hex characters (开发管理 →
# 开发设置), a CAM API key is an "AKID…" SecretId of 36 characters and a 32-character SecretKey.
_APPID = (re.compile(r"wx[0-9a-f]{16}"), "wx + 16 hex characters")
_APPSECRET = (re.compile(r"[0-9a-fA-F]{32}"), "the mini-program's AppSecret, 32 hex characters")
_CAM_SECRET_ID = (re.compile(r"AKID[0-9A-Za-z]{32}"), "a CAM SecretId, AKID + 32 letters or digits")
_CAM_SECRET_KEY = (re.compile(r"[0-9A-Za-z]{32}"), "a CAM SecretKey, 32 letters or digits")


class Settings(BaseSettings):
    """Every tunable of the back end. Field ``x`` is read from ``CAIYUN_X`` unless noted."""

    # hide_input_in_errors: a refused value (a secret) must never reach the cold-start log.
    model_config = SettingsConfigDict(
        env_prefix="CAIYUN_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    env: Literal["sandbox", "production"] = "sandbox"

    # Database: MONGODB_URI selects real MongoDB; otherwise the embedded engine persists in
    # data_dir (or stays in memory when data_dir is empty, as the tests use it).
    mongodb_uri: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("MONGODB_URI", "CAIYUN_MONGODB_URI")
    )
    db_name: str = "caiyun"
    data_dir: str = ""
    # How long a write on the embedded engine waits for another process's write lock on the
    # same data directory before it answers UNAVAILABLE.
    db_busy_timeout_s: float = Field(default=10.0, gt=0, le=600)

    # Secrets.
    token_secret: SecretStr = SecretStr("")
    code_hash_key: SecretStr = SecretStr("")
    data_key: SecretStr = SecretStr("")  # base64 of 32 bytes, AES-256-GCM for ID/card numbers

    session_ttl_s: int = 30 * 24 * 3600

    # SMS verification codes.
    sms_code_ttl_s: int = 300
    sms_resend_s: int = 60
    sms_daily_limit: int = 10
    sms_max_attempts: int = 5
    # Per caller (openid, or source IP over HTTP): calls allowed per minute.
    check_account_per_minute: int = 20
    send_code_per_minute: int = 5
    # check_account against enumeration from many openids (issue 17.6): asks about one phone
    # per hour, and asks from everyone together per minute.
    check_account_per_phone_per_hour: int = Field(default=10, ge=1)
    check_account_global_per_minute: int = Field(default=300, ge=1)
    # Wrong house-binding attempts (bind_house.bind whose owner details or address do not
    # match): per account per hour, and per house (address) per day, across every account.
    bind_wrong_per_account_per_hour: int = 5
    bind_wrong_per_house_per_day: int = 10
    # Creates per account, and per house where the action is about one, per Asia/Shanghai day
    # (caiyun.domain.create_limits): a real family files a few repairs a day, an admin
    # publishes a handful of notices.
    repairs_per_account_per_day: int = Field(default=10, ge=1)
    repairs_per_house_per_day: int = Field(default=20, ge=1)
    complaints_per_account_per_day: int = Field(default=10, ge=1)
    complaints_per_house_per_day: int = Field(default=20, ge=1)
    uploads_per_account_per_day: int = Field(default=200, ge=1)
    member_adds_per_account_per_day: int = Field(default=20, ge=1)
    member_adds_per_house_per_day: int = Field(default=10, ge=1)
    visitors_per_account_per_day: int = Field(default=50, ge=1)
    visitors_per_house_per_day: int = Field(default=100, ge=1)
    notices_per_account_per_day: int = Field(default=20, ge=1)
    staff_adds_per_account_per_day: int = Field(default=100, ge=1)

    # Payments: how long an unpaid ICBC order holds its bills, and when a pending order with no
    # notify is reconciled by querying ICBC instead.
    order_ttl_s: int = 15 * 60
    order_query_after_s: int = 30
    # Payment reminders: each house reaches each of its payers at most once per window. Owners
    # and family are payers; tenants too unless this is switched off.
    reminder_window_s: int = 24 * 3600
    reminder_start_hour: int = 9
    reminder_end_hour: int = 20
    reminder_include_tenants: bool = True

    # Tencent Cloud SMS (sms v20210111).
    sms_provider: Literal["sandbox", "tencent"] = "sandbox"
    tencent_secret_id: SecretStr = SecretStr("")
    tencent_secret_key: SecretStr = SecretStr("")
    sms_region: str = "ap-guangzhou"
    sms_endpoint: str = "sms.tencentcloudapi.com"
    sms_scheme: Literal["https", "http"] = "https"
    sms_sdk_app_id: str = ""
    sms_sign_name: str = ""
    sms_template_code: str = ""  # template with {1}=code, {2}=minutes valid

    # WeChat mini-programs: the resident app and the staff app have their own appid/secret.
    wechat_api_base: str = "https://api.weixin.qq.com"
    wechat_appid: str = ""
    wechat_secret: SecretStr = SecretStr("")
    wechat_staff_appid: str = ""
    wechat_staff_secret: SecretStr = SecretStr("")
    wechat_timeout_s: float = 5.0
    # Subscription message templates by purpose (bill, repair, complaint, reminder, payment,
    # notice), as JSON in CAIYUN_WECHAT_TEMPLATES; a purpose without one goes to the inbox only.
    wechat_templates: dict[str, str] = {}
    wechat_miniprogram_state: Literal["developer", "trial", "formal"] = "formal"

    # ICBC Open Platform (工行 API 开放平台); see caiyun.adapters.icbc_protocol. Keys are PEM (or
    # ICBC's bare base64 DER): ours (2048 bits at least) signs requests and notify replies with
    # icbc_sign_type, the app's registration with ICBC (RSA = SHA1withRSA, RSA2 =
    # SHA256withRSA); the gateway's (1024 bits in every ICBC sample) verifies ICBC. The AES key
    # (base64) encrypts the JFT wallet interfaces' biz_content.
    icbc_gateway: str = "https://gw.open.icbc.com.cn"
    icbc_app_id: str = ""
    icbc_sign_type: Literal["RSA", "RSA2"] = "RSA2"
    icbc_private_key: SecretStr = SecretStr("")
    icbc_gateway_public_key: str = ""
    icbc_aes_key: SecretStr = SecretStr("")
    # Implementations disagree on the algorithm of the gateway's replies and on which path a
    # notify is signed over; a notify's own sign_type names its algorithm. Empty: the path of
    # icbc_notify_url as ICBC sees it ("/" for a function URL's root).
    icbc_response_sign_alg: Literal["SHA1", "SHA256"] = "SHA1"
    icbc_notify_sign_path: str = ""
    icbc_merchant_id: str = ""
    icbc_mer_prtcl_no: str = ""  # 收单产品协议编号 of the aggregate-pay contract
    icbc_notify_url: str = ""
    icbc_timeout_s: float = 10.0
    # The JFT contract: the partner's vendor id and the entrusted-debit (代扣) project and
    # business codes the branch assigns.
    icbc_vendor_id: str = ""
    icbc_entrust_project_id: str = ""
    icbc_entrust_busi_code: str = ""
    # openacct/V2 userProFlag per account class (the sample lists 00 none, 01 Class I, 02 Class
    # II, 03 both); which value opens a Class III account is the branch sheet's to confirm.
    icbc_user_pro_flags: dict[str, str] = {"I": "01", "II": "02", "III": "03"}
    # walletorderfin's date and amount style: the two ICBC samples disagree (icbc_sheets).
    icbc_wallet_pay_style: Literal["compact", "dashed"] = "compact"
    # Interface paths: the branch contract decides which interfaces an app may call, and the
    # names of those without public documentation, so each one is configurable.
    icbc_pay_path: str = "/api/cardbusiness/aggregatepay/b2c/online/consumepurchase/V1"
    icbc_query_path: str = "/api/cardbusiness/aggregatepay/b2c/online/orderqry/V1"
    icbc_wallet_open_path: str = "/api/jft/wallet/api/openacct/V2"
    icbc_wallet_sendmsg_path: str = "/api/jft/wallet/api/openacctsendmsg/V1"
    icbc_wallet_checksms_path: str = "/api/jft/wallet/api/checksms/V1"
    icbc_wallet_pay_path: str = "/api/jft/wallet/api/walletorderfin/V1"
    icbc_wallet_balance_path: str = "/api/jft/wallet/api/balancequery/V1"
    icbc_wallet_transactions_path: str = "/api/jft/wallet/api/detailquery/V1"
    icbc_autodebit_sms_path: str = "/api/jft/api/user/entrust/prtl/msg/V1"
    icbc_autodebit_agreement_path: str = "/api/jft/api/user/entrust/protocol/mng/V1"
    icbc_autodebit_pay_path: str = "/api/b2c/passfree/payment/pay/V1"

    # Files (repair photos and the like) are uploaded by the mini-program; actions accept only
    # file ids of this deployment's storage (see caiyun.adapters.storage for the id forms).
    storage_provider: Literal["sandbox", "cloudbase", "cos"] = "sandbox"
    cloudbase_env: str = ""  # CloudBase environment id: cloud://<env>.<bucket>/<path>
    cos_bucket: str = ""  # <name>-<appid>: cos://<bucket>/<key>
    cos_region: str = "ap-guangzhou"
    cos_endpoint: str = ""  # empty: https://cos.<region>.myqcloud.com
    cos_secret_id: SecretStr = SecretStr("")
    cos_secret_key: SecretStr = SecretStr("")
    upload_url_ttl_s: int = 900
    # How long a display URL of a stored image (repair photos, avatars) stays valid; CloudBase
    # allows at most a day.
    display_url_ttl_s: int = Field(default=3600, ge=60, le=86400)
    # How long a warm container keeps the app configuration (agreements, repair categories,
    # complaint types) before reading it again: a change reaches every container within this.
    config_cache_s: int = Field(default=60, ge=0, le=3600)

    # An import job (admin.run_import) takes at most this many rows, or this many seconds, per
    # call, so each call ends well inside the function's timeout (SCF: 60 s unless raised).
    import_chunk_rows: int = Field(default=20000, ge=1)
    import_chunk_s: float = Field(default=25.0, gt=0)

    # Timer jobs work through due records in batches of this many.
    scheduler_batch_size: int = 500
    # No timer invocation works past this many seconds (SCF stops a function at 900 s): a job
    # with more to do stops at a checkpoint between batches, and the next invocation resumes it.
    scheduler_budget_s: int = Field(default=600, ge=1, le=880)

    # The WeChat push sender (caiyun.domain.pushes): calls in flight at once, attempts per push,
    # and the first retry's delay (doubling with each attempt after).
    push_concurrency: int = Field(default=8, ge=1, le=64)
    push_max_attempts: int = Field(default=5, ge=1)
    push_retry_base_s: int = Field(default=60, ge=1)

    @model_validator(mode="after")
    def _secrets_for_profile(self) -> Settings:
        if not self.icbc_notify_sign_path:
            path = urlsplit(self.icbc_notify_url).path if self.icbc_notify_url else ""
            object.__setattr__(self, "icbc_notify_sign_path", path or "/")
        if self.env == "sandbox":
            # The sandbox profile fills in well-known keys: on a real cloud function (SCF and
            # CloudBase set TENCENTCLOUD_RUNENV) a forgotten CAIYUN_ENV must fail, not run open.
            if os.environ.get("TENCENTCLOUD_RUNENV"):
                raise ValueError("CAIYUN_ENV=production is required on a cloud function")
            defaults = {
                "token_secret": _SANDBOX_TOKEN_SECRET,
                "code_hash_key": _SANDBOX_CODE_KEY,
                "data_key": _SANDBOX_DATA_KEY,
            }
            for name, value in defaults.items():
                if not getattr(self, name).get_secret_value():
                    object.__setattr__(self, name, SecretStr(value))
            return self
        problems = [*self._weak_secrets(), *self._missing_production_settings()]
        if problems:
            raise ValueError("production settings refused: " + "; ".join(problems))
        return self

    def _weak_secrets(self) -> list[str]:
        problems = []
        for name in ("token_secret", "code_hash_key"):
            value = getattr(self, name).get_secret_value()
            variable = f"CAIYUN_{name.upper()}"
            if len(value) < _MIN_SECRET_LEN or value.startswith("sandbox-"):
                problems.append(f"{variable} must be at least {_MIN_SECRET_LEN} chars")
            elif why := _guessable(value):
                problems.append(f"{variable} {why}: generate it at random")
        if self.token_secret.get_secret_value() == self.code_hash_key.get_secret_value():
            problems.append("CAIYUN_TOKEN_SECRET and CAIYUN_CODE_HASH_KEY must differ")
        try:
            key = base64.b64decode(self.data_key.get_secret_value(), validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != 32 or self.data_key.get_secret_value() == _SANDBOX_DATA_KEY:
            problems.append("CAIYUN_DATA_KEY must be base64 of 32 random bytes")
        elif why := _guessable(key):
            problems.append(f"CAIYUN_DATA_KEY {why}: it must be 32 random bytes")
        return problems + self._implausible_credentials()

    def _implausible_credentials(self) -> list[str]:
        """Values that cannot be what the consoles issue (a typo, a placeholder, a test value)."""
        fields = {
            "wechat_appid": _APPID,
            "wechat_staff_appid": _APPID,
            "wechat_secret": _APPSECRET,
            "wechat_staff_secret": _APPSECRET,
            "tencent_secret_id": _CAM_SECRET_ID,
            "tencent_secret_key": _CAM_SECRET_KEY,
        }
        if self.storage_provider == "cos":
            fields |= {"cos_secret_id": _CAM_SECRET_ID, "cos_secret_key": _CAM_SECRET_KEY}
        problems = []
        for name, (pattern, expected) in fields.items():
            value = getattr(self, name)
            value = value.get_secret_value() if isinstance(value, SecretStr) else value
            variable = f"CAIYUN_{name.upper()}"
            # A missing value is reported as required elsewhere.
            if value and not pattern.fullmatch(value):
                problems.append(f"{variable} is not {expected}")
            elif value and name.endswith(("secret", "key")) and (why := _guessable(value)):
                problems.append(f"{variable} {why}")
        return problems

    def _missing_production_settings(self) -> list[str]:
        required = {
            "MONGODB_URI": self.mongodb_uri and self.mongodb_uri.get_secret_value(),
            "CAIYUN_TENCENT_SECRET_ID": self.tencent_secret_id.get_secret_value(),
            "CAIYUN_TENCENT_SECRET_KEY": self.tencent_secret_key.get_secret_value(),
            "CAIYUN_SMS_SDK_APP_ID": self.sms_sdk_app_id,
            "CAIYUN_SMS_SIGN_NAME": self.sms_sign_name,
            "CAIYUN_SMS_TEMPLATE_CODE": self.sms_template_code,
            "CAIYUN_WECHAT_APPID": self.wechat_appid,
            "CAIYUN_WECHAT_SECRET": self.wechat_secret.get_secret_value(),
            "CAIYUN_WECHAT_STAFF_APPID": self.wechat_staff_appid,
            "CAIYUN_WECHAT_STAFF_SECRET": self.wechat_staff_secret.get_secret_value(),
            "CAIYUN_ICBC_APP_ID": self.icbc_app_id,
            "CAIYUN_ICBC_PRIVATE_KEY": self.icbc_private_key.get_secret_value(),
            "CAIYUN_ICBC_GATEWAY_PUBLIC_KEY": self.icbc_gateway_public_key,
            "CAIYUN_ICBC_MERCHANT_ID": self.icbc_merchant_id,
            "CAIYUN_ICBC_NOTIFY_URL": self.icbc_notify_url,
            "CAIYUN_ICBC_AES_KEY": self.icbc_aes_key.get_secret_value(),
            "CAIYUN_ICBC_MER_PRTCL_NO": self.icbc_mer_prtcl_no,
            "CAIYUN_ICBC_VENDOR_ID": self.icbc_vendor_id,
            "CAIYUN_ICBC_ENTRUST_PROJECT_ID": self.icbc_entrust_project_id,
            "CAIYUN_ICBC_ENTRUST_BUSI_CODE": self.icbc_entrust_busi_code,
        }
        problems = [f"{name} is required" for name, value in required.items() if not value]
        if self.sms_provider != "tencent":
            problems.append("CAIYUN_SMS_PROVIDER must be tencent")
        if self.storage_provider == "sandbox":
            problems.append("CAIYUN_STORAGE_PROVIDER must be cloudbase or cos")
        if self.icbc_private_key.get_secret_value() and self.icbc_gateway_public_key:
            problems += key_problems(
                self.icbc_private_key.get_secret_value(), self.icbc_gateway_public_key
            )
        if self.icbc_aes_key.get_secret_value():
            problems += aes_problems(self.icbc_aes_key.get_secret_value())
        return problems + self._missing_storage_settings()

    def _missing_storage_settings(self) -> list[str]:
        required: dict[str, str] = {}
        if self.storage_provider == "cloudbase":
            required = {"CAIYUN_CLOUDBASE_ENV": self.cloudbase_env}
        elif self.storage_provider == "cos":
            required = {
                "CAIYUN_COS_BUCKET": self.cos_bucket,
                "CAIYUN_COS_SECRET_ID": self.cos_secret_id.get_secret_value(),
                "CAIYUN_COS_SECRET_KEY": self.cos_secret_key.get_secret_value(),
            }
        return [f"{name} is required" for name, value in required.items() if not value]

    @property
    def is_sandbox(self) -> bool:
        """True for the local sandbox profile, where /dev routes and fake services exist."""
        return self.env == "sandbox"

    def data_key_bytes(self) -> bytes:
        """The AES-256 key for personal data at rest."""
        return base64.b64decode(self.data_key.get_secret_value())


def _guessable(value: str | bytes) -> str | None:
    """Why a secret is guessable (a repeated pattern, too few distinct symbols); else None."""
    size = len(value)
    for period in range(1, size // 2 + 1):
        if size % period == 0 and value[:period] * (size // period) == value:
            return "repeats a shorter pattern"
    distinct = len(set(value))
    # Random bytes: about as many distinct values as bytes; random text: at least a handful.
    floor = size // 2 if isinstance(value, bytes) else _MIN_DISTINCT_CHARS
    if distinct < floor:
        return f"uses only {distinct} distinct symbols"
    return None


def _variable(field: str) -> str:
    return "MONGODB_URI" if field == "mongodb_uri" else f"CAIYUN_{field.upper()}"


def settings_problems(error: ValidationError) -> list[str]:
    """Each reason a Settings was refused, naming the variable (no value is ever included)."""
    problems: list[str] = []
    for detail in error.errors():
        message = str(detail.get("msg", ""))
        if detail.get("type") == "value_error":
            text = message.removeprefix("Value error, ").removeprefix(
                "production settings refused: "
            )
            problems += [part for part in text.split("; ") if part]
        else:
            where = ".".join(str(part) for part in detail.get("loc", ()))
            problems.append(f"{_variable(where)}: {message}" if where else message)
    return problems


def _secret_store_values() -> dict[str, Any]:
    """Settings kept in Tencent Cloud Secrets Manager, when the environment names a secret."""
    if not os.environ.get("CAIYUN_SSM_SECRET"):
        return {}
    try:
        values = read_settings_secret()
    except SecretStoreError as exc:
        raise SettingsUnavailable([str(exc)]) from None
    known = {_variable(name): name for name in Settings.model_fields}
    unknown = sorted(set(values) - set(known))
    environment = {name.upper() for name in os.environ}
    both = sorted(name for name in values if name in environment)
    problems = [f"{name} in the SSM secret is not a setting" for name in unknown]
    problems += [f"{name} is set both in the environment and in the SSM secret" for name in both]
    if problems:
        raise SettingsUnavailable(problems)
    # MONGODB_URI is read by its alias; every other setting by its field name.
    return {
        (name if name == "MONGODB_URI" else known[name]): value for name, value in values.items()
    }


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this warm container: the environment, plus the SSM secret it names.

    Read once per warm container (the secret store is asked once too). Raises
    SettingsUnavailable, naming what is missing or refused, when the function cannot serve.
    """
    overrides = _secret_store_values()
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise SettingsUnavailable(settings_problems(exc)) from None
