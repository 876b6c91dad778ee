"""Realistic production values for what serverless.yml and the SSM secret carry.

Sizes follow what the consoles issue (a mini-program appid and AppSecret, a CAM key pair, an
ICBC app id and merchant codes) and what docs/deploy.md tells the engineer to generate (our RSA
2048 key as one base64 line, ICBC's 1024-bit gateway key as every ICBC sample has it), so a
test that measures the environment measures what a real deploy would send.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import secrets
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SERVERLESS_YML = ROOT / "serverless.yml"
SECRET_TEMPLATE = ROOT / "deploy" / "settings-secret.template.json"
ENV_REFERENCE = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")


def serverless_config() -> dict[str, Any]:
    """serverless.yml as YAML reads it."""
    return yaml.safe_load(SERVERLESS_YML.read_text(encoding="utf-8"))


def secret_template() -> dict[str, str]:
    """The settings the SSM secret holds (deploy/settings-secret.template.json)."""
    return json.loads(SECRET_TEMPLATE.read_text(encoding="utf-8"))


@functools.cache
def icbc_keys() -> tuple[str, str]:
    """Our RSA 2048 private key and a 1024-bit gateway public key, as one-line base64 DER."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    ours = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    gateway = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    private = ours.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public = gateway.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(private).decode(), base64.b64encode(public).decode()


def _alphanumeric(size: int) -> str:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(size))


def secret_values() -> dict[str, str]:
    """A filled SSM secret: every key of the template with a value of its real size."""
    private, gateway = icbc_keys()
    return {
        "MONGODB_URI": (
            "mongodb://caiyun_app:" + _alphanumeric(24) + "@10.0.0.11:27017,10.0.0.12:27017,"
            "10.0.0.13:27017/?replicaSet=cmgo-6k2mz9ab_0&authSource=admin&w=majority"
        ),
        "CAIYUN_TOKEN_SECRET": secrets.token_urlsafe(48),
        "CAIYUN_CODE_HASH_KEY": secrets.token_urlsafe(48),
        "CAIYUN_DATA_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "CAIYUN_TENCENT_SECRET_ID": "AKID" + _alphanumeric(32),
        "CAIYUN_TENCENT_SECRET_KEY": _alphanumeric(32),
        "CAIYUN_WECHAT_SECRET": secrets.token_hex(16),
        "CAIYUN_WECHAT_STAFF_SECRET": secrets.token_hex(16),
        "CAIYUN_ICBC_PRIVATE_KEY": private,
        "CAIYUN_ICBC_GATEWAY_PUBLIC_KEY": gateway,
        "CAIYUN_ICBC_AES_KEY": base64.b64encode(secrets.token_bytes(16)).decode(),
        "CAIYUN_COS_SECRET_ID": "AKID" + _alphanumeric(32),
        "CAIYUN_COS_SECRET_KEY": _alphanumeric(32),
    }


# The deploy shell's values for serverless.yml's ${env:...} references.
DEPLOY_SHELL = {
    "STAGE": "prod",
    "SCF_REGION": "ap-guangzhou",
    "SCF_ROLE": "CaiyunFunctionRole",
    "SCF_VPC_ID": "vpc-2x7k9m3a",
    "SCF_SUBNET_ID": "subnet-8q4w6e1r",
    "CAIYUN_SSM_SECRET": "caiyun-prod-settings",
    "CAIYUN_SSM_VERSION": "v1",
    "CAIYUN_DB_NAME": "caiyun",
    "CAIYUN_SMS_SDK_APP_ID": "1400987654",
    "CAIYUN_SMS_SIGN_NAME": "彩云居家物业服务",
    "CAIYUN_SMS_TEMPLATE_CODE": "2187654",
    "CAIYUN_WECHAT_APPID": "wx8c3f5a7b9d1e2f40",
    "CAIYUN_WECHAT_STAFF_APPID": "wx1a2b3c4d5e6f7089",
    # Six subscription templates, with ids of the length WeChat issues (43 characters).
    "CAIYUN_WECHAT_TEMPLATES": json.dumps(
        {
            purpose: _alphanumeric(43)
            for purpose in ("bill", "repair", "complaint", "reminder", "payment", "notice")
        }
    ),
    "CAIYUN_ICBC_APP_ID": "10000000000004097123",
    "CAIYUN_ICBC_MERCHANT_ID": "020001020012345",
    "CAIYUN_ICBC_SIGN_TYPE": "RSA2",
    "CAIYUN_ICBC_MER_PRTCL_NO": "0200010200123450201",
    "CAIYUN_ICBC_VENDOR_ID": "CAIYUN0001",
    "CAIYUN_ICBC_ENTRUST_PROJECT_ID": "PJ140014011000012345",
    "CAIYUN_ICBC_ENTRUST_BUSI_CODE": "10002",
    "CAIYUN_ICBC_NOTIFY_URL": "https://1312345678-8yq2kz4m9a.ap-guangzhou.tencentscf.com/",
    "CAIYUN_STORAGE_PROVIDER": "cos",
    "CAIYUN_CLOUDBASE_ENV": "",
    "CAIYUN_COS_BUCKET": "caiyun-files-1312345678",
    "CAIYUN_COS_REGION": "ap-guangzhou",
}


def environment_variables() -> dict[str, str]:
    """The variables serverless.yml gives every function, filled from the deploy shell."""
    filled = {}
    for entry in serverless_config()["inputs"]["environments"]:
        value = str(entry["value"])
        filled[entry["key"]] = ENV_REFERENCE.sub(lambda m: DEPLOY_SHELL[m.group(1)], value)
    return filled


def environment_bytes(variables: dict[str, str]) -> int:
    """What SCF counts against its 4 KB: each key and value, in UTF-8 bytes."""
    return sum(len(key.encode()) + len(value.encode()) for key, value in variables.items())
