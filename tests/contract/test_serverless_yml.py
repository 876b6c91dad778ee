"""serverless.yml declares every function as multi-scf will deploy it, fits SCF's limits, and
holds no secret. (tests/contract/test_deploy_tools.py runs the deploy tools' own code over it.)"""

from __future__ import annotations

import importlib.util
import os
import re
from typing import Any

import pytest
from deploy_values import (
    DEPLOY_SHELL,
    ENV_REFERENCE,
    ROOT,
    SERVERLESS_YML,
    environment_bytes,
    environment_variables,
    secret_template,
    secret_values,
    serverless_config,
)
from pydantic import SecretStr, ValidationError

from caiyun.packaging import DEFAULT_PYTHON_VERSION, function_names
from caiyun.sandbox import environment as sandbox_environment
from caiyun.settings import Settings

TEXT = SERVERLESS_YML.read_text(encoding="utf-8")
CONFIG: dict[str, Any] = serverless_config()
INPUTS: dict[str, Any] = CONFIG["inputs"]
FUNCTIONS: dict[str, dict[str, Any]] = INPUTS["functions"]
TIMER_ONLY = {"scheduler"}
# The only literal values the environment may hold: none of them is a secret.
FIXED_VALUES = {"CAIYUN_ENV": "production", "CAIYUN_SMS_PROVIDER": "tencent", "TZ": "Asia/Shanghai"}
NAMED_SETTING = re.compile(r"\b(MONGODB_URI|CAIYUN_[A-Z0-9_]+)\b")
# SCF's limit on one function's environment variables (document 583/11637).
ENVIRONMENT_LIMIT = 4096
SECRET_FIELDS = {
    "MONGODB_URI" if name == "mongodb_uri" else f"CAIYUN_{name.upper()}"
    for name, field in Settings.model_fields.items()
    if field.annotation in (SecretStr, SecretStr | None)
}


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


def test_every_function_names_the_python_the_layer_is_built_for_itself() -> None:
    # multi-scf 0.3.14 checks inputs.runtime against a list that stops at Python3.7; each
    # function's own runtime is laid over the common inputs and reaches SCF unchecked.
    assert "runtime" not in INPUTS
    for function, declared in FUNCTIONS.items():
        assert declared["runtime"] == f"Python{DEFAULT_PYTHON_VERSION}", function
        assert declared.get("type", INPUTS["type"]) == "event", function


def test_the_shared_settings_are_written_once_where_the_formatter_spreads_them() -> None:
    # formatInputs spreads every key of `inputs` into each function before its own keys.
    shared = {"environments", "layers", "vpc", "role", "publicAccess"}
    assert shared <= set(INPUTS)
    for function, declared in FUNCTIONS.items():
        assert not shared & set(declared), function
        assert declared.get("memorySize", INPUTS["memorySize"]) in {128, 256, 384, 512, 1024}
        assert 1 <= declared.get("timeout", INPUTS["timeout"]) <= 900, function


def test_the_environment_is_a_key_value_list_under_the_key_multi_scf_reads() -> None:
    # Under any key but `environments` the formatter gives the function an empty environment.
    assert "environment" not in INPUTS
    assert not any("environment" in declared for declared in FUNCTIONS.values())
    entries = INPUTS["environments"]
    assert isinstance(entries, list)
    assert all(set(entry) == {"key", "value"} for entry in entries)
    keys = [entry["key"] for entry in entries]
    assert len(keys) == len(set(keys)), "a variable is declared twice"


def test_the_layer_is_bound_by_version_number_and_the_vpc_by_id() -> None:
    (layer,) = INPUTS["layers"]
    assert layer["name"] == "caiyun-common"
    # SCF's LayerVersion is an integer; the toolkit passes the value on as written.
    assert type(layer["version"]) is int and layer["version"] >= 1
    assert INPUTS["vpc"] == {"vpcId": "${env:SCF_VPC_ID}", "subnetId": "${env:SCF_SUBNET_ID}"}
    assert INPUTS["publicAccess"] is True, "the functions reach WeChat, ICBC, SMS and SSM"


def test_every_client_function_and_icbc_get_a_public_function_url() -> None:
    urls = triggers("http")
    assert sorted(t["function"] for t in urls) == sorted(set(FUNCTIONS) - TIMER_ONLY)
    for trigger in urls:
        parameters = trigger["parameters"]
        # The functions authenticate callers (bearer tokens) and ICBC (its signature).
        assert parameters["authType"] == "NONE"
        assert parameters["netConfig"] == {"enableIntranet": False, "enableExtranet": True}
        assert parameters["qualifier"] == "$DEFAULT"
    # API Gateway triggers can no longer be created (SCF announcement, document 583/107631).
    assert triggers("apigw") == []


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
    # Every minute: the timer sends the queued WeChat pushes (caiyun.domain.pushes).
    assert minute == "*"
    # Weekday numbers differ between the SCF and CloudBase documents; names or * are safe.
    assert not re.search(r"[0-9]", weekday)
    assert environment_variables()["TZ"] == "Asia/Shanghai"


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


def test_every_required_setting_is_in_the_environment_or_the_ssm_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    required = production_requirements(monkeypatch)
    # Sanity: the probe really finds the secrets and the services' identities.
    assert {"MONGODB_URI", "CAIYUN_TOKEN_SECRET", "CAIYUN_ICBC_PRIVATE_KEY"} <= required
    assert required <= set(environment_variables()) | set(secret_template())


def test_secrets_are_only_in_the_ssm_secret_and_the_environment_only_names_it() -> None:
    in_secret = set(secret_template())
    assert in_secret >= SECRET_FIELDS
    # ICBC's gateway key is public but decides which notifies we believe: kept with the keys.
    assert in_secret - SECRET_FIELDS == {"CAIYUN_ICBC_GATEWAY_PUBLIC_KEY"}
    assert not in_secret & set(environment_variables())
    for key, value in ((e["key"], e["value"]) for e in INPUTS["environments"]):
        if key in FIXED_VALUES:
            assert value == FIXED_VALUES[key]
        else:
            assert value == f"${{env:{key}}}", key


def test_the_declared_environment_and_the_filled_secret_start_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    production_requirements(monkeypatch)
    for key, value in environment_variables().items():
        monkeypatch.setenv(key, value)
    values = secret_values()
    fields = {
        "MONGODB_URI" if key == "MONGODB_URI" else key.removeprefix("CAIYUN_").lower(): value
        for key, value in values.items()
    }
    settings = Settings(**fields)
    assert settings.env == "production" and settings.sms_provider == "tencent"
    # ICBC posts to the function URL's root, so that is the path it signs over.
    assert settings.icbc_notify_sign_path == "/"


def test_a_functions_environment_fits_scfs_4_kb_with_real_values() -> None:
    environment = environment_bytes(environment_variables())
    with_secrets = environment_bytes({**environment_variables(), **secret_values()})
    print(f"\nenvironment of one function: {environment} bytes of {ENVIRONMENT_LIMIT}")
    print(f"the same with the secrets inline: {with_secrets} bytes")
    # Half the limit stays free for the optional settings an engineer may add (ICBC paths,
    # limits); inline, the secrets alone would take most of it.
    assert environment <= ENVIRONMENT_LIMIT // 2
    assert with_secrets - environment > ENVIRONMENT_LIMIT // 2


def test_every_deploy_shell_variable_is_documented_and_used() -> None:
    referenced = set(ENV_REFERENCE.findall(TEXT))
    assert referenced == set(DEPLOY_SHELL)
    guide = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    assert [name for name in sorted(referenced) if name not in guide] == []


def test_no_secret_literal_is_in_the_file() -> None:
    forbidden = [
        "PRIVATE KEY",
        "PUBLIC KEY",
        sandbox_environment.SANDBOX_SECRET,
        sandbox_environment.SANDBOX_STAFF_SECRET,
        "sandbox-token-secret",
        "sandbox-code-hash-key",
    ]
    for text in (TEXT, (ROOT / "deploy" / "settings-secret.template.json").read_text()):
        for literal in forbidden:
            assert literal not in text, literal
        # Credentials inside a connection string, or any long key-like blob (keys, tokens and
        # base64 always carry digits; variable names and paths here do not).
        assert not re.search(r"mongodb(\+srv)?://[^$\s<]", text)
        blobs = re.findall(r"[A-Za-z0-9+/=_-]{32,}", ENV_REFERENCE.sub("", text))
        assert [blob for blob in blobs if re.search(r"[0-9]", blob)] == []
