"""serverless.yml declares every function as the platform will run it, and holds no secret."""

from __future__ import annotations

import base64
import functools
import importlib.util
import os
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr, ValidationError

from caiyun.packaging import DEFAULT_PYTHON_VERSION, function_names
from caiyun.sandbox import server as sandbox_server
from caiyun.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SERVERLESS_YML = ROOT / "serverless.yml"
TEXT = SERVERLESS_YML.read_text(encoding="utf-8")
CONFIG: dict[str, Any] = yaml.safe_load(TEXT)
INPUTS: dict[str, Any] = CONFIG["inputs"]
FUNCTIONS: dict[str, dict[str, Any]] = INPUTS["functions"]
TIMER_ONLY = {"scheduler"}
NOTIFY_FUNCTION = "icbc_callback"
ENV_REFERENCE = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}")
# The only literal values the environment may hold: none of them is a secret.
FIXED_VALUES = {"CAIYUN_ENV": "production", "CAIYUN_SMS_PROVIDER": "tencent", "TZ": "Asia/Shanghai"}
NAMED_SETTING = re.compile(r"\b(MONGODB_URI|CAIYUN_[A-Z0-9_]+)\b")


def environment_of(function: str) -> dict[str, str]:
    entries = FUNCTIONS[function]["environment"]
    assert isinstance(entries, list), "multi-scf takes environment variables as a key/value list"
    pairs = [(entry["key"], entry["value"]) for entry in entries]
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)), f"{function}: a variable is declared twice"
    return dict(pairs)


def triggers(kind: str) -> list[dict[str, Any]]:
    return [t for t in INPUTS["triggers"] if t["type"] == kind]


def load_handler(function: str) -> Any:
    path = ROOT / "functions" / function / "index.py"
    spec = importlib.util.spec_from_file_location(f"serverless_yml_check_{function}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main_handler


def test_every_function_folder_is_declared_and_nothing_else() -> None:
    assert set(FUNCTIONS) == set(function_names(ROOT))


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_each_declared_handler_is_the_main_handler_of_its_own_folder(function: str) -> None:
    declared = FUNCTIONS[function]
    assert declared["handler"] == "index.main_handler"
    # The component zips this folder on its own, so index.py is at the root of /var/user.
    assert (ROOT / declared["src"]).resolve() == (ROOT / "functions" / function).resolve()
    assert callable(load_handler(function))


def test_every_function_runs_on_the_python_the_layer_is_built_for() -> None:
    runtime = f"Python{DEFAULT_PYTHON_VERSION}"
    assert INPUTS["runtime"] == runtime
    for function, declared in FUNCTIONS.items():
        assert declared.get("runtime", runtime) == runtime, function
        assert declared.get("type", INPUTS.get("type", "event")) == "event", function


def test_every_function_binds_the_layer_joins_the_vpc_and_sizes_itself() -> None:
    for function, declared in FUNCTIONS.items():
        assert [layer["name"] for layer in declared["layers"]] == ["caiyun-common"], function
        assert ENV_REFERENCE.fullmatch(str(declared["layers"][0]["version"])), function
        assert declared["vpcConfig"] == {
            "vpcId": "${env:SCF_VPC_ID}",
            "subnetId": "${env:SCF_SUBNET_ID}",
        }, f"{function} must reach MongoDB in the VPC"
        assert declared["publicAccess"] is True, f"{function} must reach WeChat, ICBC and SMS"
        assert declared["memorySize"] in {128, 256, 384, 512, 640, 768, 896, 1024}, function
        assert 1 <= declared["timeout"] <= 900, function


def test_every_client_function_gets_a_post_route_and_icbc_its_notify_path() -> None:
    (gateway,) = triggers("apigw")
    routes = {
        (api["path"], api["method"], api["function"]) for api in gateway["parameters"]["apis"]
    }
    expected = {
        (f"/api/{name}", "POST", name)
        for name in FUNCTIONS
        if name not in TIMER_ONLY and name != NOTIFY_FUNCTION
    }
    expected.add(("/icbc/notify", "POST", NOTIFY_FUNCTION))
    assert routes == expected
    # The functions answer with statusCode/headers/body, which needs integrated response.
    assert all(api.get("isIntegratedResponse") is True for api in gateway["parameters"]["apis"])


def test_the_scheduler_has_an_enabled_seven_field_timer_in_beijing_time() -> None:
    timers = triggers("timer")
    assert [t["function"] for t in timers] == ["scheduler"]
    parameters = timers[0]["parameters"]
    # The scf/multi-scf components leave a timer disabled unless told otherwise.
    assert parameters["enable"] is True
    fields = parameters["cronExpression"].split()
    assert len(fields) == 7, "SCF cron: second minute hour day month weekday year"
    second, minute, _hour, _day, _month, weekday, _year = fields
    assert second.isdigit(), "a fixed second, or the job would fire every second"
    assert minute != "*", "at most once a minute"
    # Weekday numbers differ between the SCF and CloudBase documents; names or * are safe.
    assert not re.search(r"[0-9]", weekday)
    assert environment_of("scheduler")["TZ"] == "Asia/Shanghai"


def test_every_function_gets_the_same_environment() -> None:
    first = environment_of(sorted(FUNCTIONS)[0])
    for function in FUNCTIONS:
        assert environment_of(function) == first, function


def production_requirements(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """The variables a production Settings names as missing, for each storage provider."""
    for name in list(os.environ):
        if name.startswith("CAIYUN_") or name == "MONGODB_URI":
            monkeypatch.delenv(name)
    named: set[str] = set()
    for storage in ("cloudbase", "cos"):
        with pytest.raises(ValidationError) as refused:
            Settings(env="production", storage_provider=storage)
        named |= set(NAMED_SETTING.findall(str(refused.value)))
    return named


def test_every_setting_production_requires_is_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    required = production_requirements(monkeypatch)
    # Sanity: the probe really finds the secrets and the services' identities.
    assert {"MONGODB_URI", "CAIYUN_TOKEN_SECRET", "CAIYUN_ICBC_PRIVATE_KEY"} <= required
    assert required <= set(environment_of("login"))


@functools.cache
def icbc_key_pair() -> tuple[str, str]:
    """A real RSA 2048 pair in the one-line base64 DER form docs/deploy.md recommends."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(private).decode(), base64.b64encode(public).decode()


def fill(name: str) -> str:
    """A plausible production value for a variable the deploy shell would supply."""
    if name == "CAIYUN_ICBC_PRIVATE_KEY":
        return icbc_key_pair()[0]
    if name == "CAIYUN_ICBC_GATEWAY_PUBLIC_KEY":
        return icbc_key_pair()[1]
    if name == "CAIYUN_DATA_KEY":
        return base64.b64encode(secrets.token_bytes(32)).decode()
    if name == "CAIYUN_WECHAT_TEMPLATES":
        return "{}"
    if name == "CAIYUN_STORAGE_PROVIDER":
        return "cos"
    if name == "CAIYUN_COS_REGION":
        return "ap-guangzhou"
    if name == "CAIYUN_DB_NAME":
        return "caiyun"
    if name == "MONGODB_URI":
        return "mongodb://app:pw@10.0.0.1:27017/?replicaSet=cmgo-test"
    if name == "CAIYUN_ICBC_NOTIFY_URL":
        return "https://pay.example.com/icbc/notify"
    if name == "CAIYUN_ICBC_NOTIFY_SIGN_PATH":
        return "/icbc/notify"
    if name == "CAIYUN_ICBC_SIGN_TYPE":
        return "RSA2"
    if name == "CAIYUN_ICBC_AES_KEY":
        return base64.b64encode(secrets.token_bytes(16)).decode()
    return secrets.token_urlsafe(40)


def test_the_declared_environment_filled_from_the_deploy_shell_starts_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    production_requirements(monkeypatch)
    for key, value in environment_of("login").items():
        reference = ENV_REFERENCE.fullmatch(value)
        monkeypatch.setenv(key, fill(reference.group(1)) if reference else value)
    settings = Settings()
    assert settings.env == "production"
    assert settings.sms_provider == "tencent"


def test_every_value_comes_from_the_deploy_shell_under_its_own_name_or_is_fixed() -> None:
    secret_fields = {
        f"CAIYUN_{name.upper()}"
        for name, field in Settings.model_fields.items()
        if field.annotation in (SecretStr, SecretStr | None)
    } | {"MONGODB_URI"}
    assert {"CAIYUN_ICBC_PRIVATE_KEY", "CAIYUN_WECHAT_SECRET"} <= secret_fields
    assert not secret_fields & set(FIXED_VALUES)
    for key, value in environment_of("login").items():
        if key in FIXED_VALUES:
            assert value == FIXED_VALUES[key]
        else:
            assert value == f"${{env:{key}}}", key


def test_no_secret_literal_is_in_the_file() -> None:
    forbidden = [
        "PRIVATE KEY",
        "PUBLIC KEY",
        sandbox_server.SANDBOX_SECRET,
        sandbox_server.SANDBOX_STAFF_SECRET,
        "sandbox-token-secret",
        "sandbox-code-hash-key",
    ]
    for literal in forbidden:
        assert literal not in TEXT, literal
    # Credentials inside a connection string, or any long key-like blob (keys, tokens and
    # base64 always carry digits; variable names and paths here do not).
    assert not re.search(r"mongodb(\+srv)?://[^$\s]", TEXT)
    blobs = re.findall(r"[A-Za-z0-9+/=_-]{32,}", ENV_REFERENCE.sub("", TEXT))
    assert [blob for blob in blobs if re.search(r"[0-9]", blob)] == []
