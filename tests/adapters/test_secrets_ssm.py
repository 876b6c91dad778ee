"""Settings from Tencent Cloud Secrets Manager: the real SSM SDK client (ssm v20190923) against
a local API 3.0 endpoint that verifies its TC3-HMAC-SHA256 signature, with the temporary
credentials SCF hands a function that has a role, or a sub-user's key where there is no role."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import pytest
from deploy_values import environment_variables, secret_values
from tencent_api import TencentApiStub, running_stub

from caiyun.adapters.secrets import SecretStoreSettings, read_settings_secret
from caiyun.errors import SettingsUnavailable
from caiyun.sandbox.functions import handler
from caiyun.services import install_services
from caiyun.settings import get_settings

# What SCF puts in the environment of a function whose execution role it assumed.
ROLE_ID, ROLE_KEY, ROLE_TOKEN = "AKIDtmpRoleCredential0001", "tmpRoleKey0001", "token-of-the-role"
SECRET_NAME, VERSION = "caiyun-prod-settings", "v1"


def ssm_reply(stored: dict[str, str]) -> Any:
    """GetSecretValue as SSM answers it: the text of that name and version, else not found."""

    def reply(record: dict[str, Any]) -> dict[str, Any]:
        assert record["headers"]["x-tc-action"] == "GetSecretValue"
        asked = record["json"]
        if (asked.get("SecretName"), asked.get("VersionId")) != (SECRET_NAME, VERSION):
            return {"Error": {"Code": "ResourceNotFound.SecretNotExist", "Message": "no secret"}}
        return {
            "SecretName": SECRET_NAME,
            "VersionId": VERSION,
            "SecretString": json.dumps(stored),
        }

    return reply


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Only what each test sets; the warm container's settings forgotten before and after."""
    for name in list(os.environ):
        if name.startswith(("CAIYUN_", "TENCENTCLOUD_")) or name == "MONGODB_URI":
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


@pytest.fixture
def ssm(clean_env: pytest.MonkeyPatch) -> Iterator[TencentApiStub]:
    with running_stub(clean_env, "ssm", ROLE_ID, ROLE_KEY, ROLE_TOKEN) as server:
        yield server


def deployed(monkeypatch: pytest.MonkeyPatch, ssm: TencentApiStub) -> None:
    """The environment serverless.yml gives a function, and SCF's role credentials."""
    for key, value in environment_variables().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CAIYUN_SSM_ENDPOINT", f"127.0.0.1:{ssm.port}")
    monkeypatch.setenv("CAIYUN_SSM_SCHEME", "http")
    monkeypatch.setenv("TENCENTCLOUD_RUNENV", "SCF")
    monkeypatch.setenv("TENCENTCLOUD_REGION", "ap-shanghai")
    monkeypatch.setenv("TENCENTCLOUD_SECRETID", ROLE_ID)
    monkeypatch.setenv("TENCENTCLOUD_SECRETKEY", ROLE_KEY)
    monkeypatch.setenv("TENCENTCLOUD_SESSIONTOKEN", ROLE_TOKEN)


def test_a_deployed_function_reads_its_secrets_once_with_the_roles_credentials(
    clean_env: pytest.MonkeyPatch, ssm: TencentApiStub
) -> None:
    stored = secret_values()
    ssm.reply = ssm_reply(stored)
    deployed(clean_env, ssm)

    settings = get_settings()

    assert settings.env == "production"
    assert settings.icbc_private_key.get_secret_value() == stored["CAIYUN_ICBC_PRIVATE_KEY"]
    assert settings.mongodb_uri is not None
    assert settings.mongodb_uri.get_secret_value() == stored["MONGODB_URI"]
    [request] = ssm.requests
    assert request["signature_valid"] is True
    assert request["headers"]["x-tc-version"] == "2019-09-23"
    assert request["headers"]["x-tc-region"] == "ap-shanghai"
    assert request["json"] == {"SecretName": SECRET_NAME, "VersionId": VERSION}
    # A warm container asks once.
    assert get_settings() is settings
    assert len(ssm.requests) == 1


def test_a_host_without_roles_reads_them_with_a_sub_users_key(
    clean_env: pytest.MonkeyPatch,
) -> None:
    # WeChat CloudBase gives a function no role: a CAM sub-user that may read only this secret.
    with running_stub(clean_env, "ssm", "AKIDreadOnlySsmUser0001", "readOnlyKey0001") as ssm:
        ssm.reply = ssm_reply({"CAIYUN_WECHAT_SECRET": "ab" * 16})
        source = SecretStoreSettings(
            secret=SECRET_NAME,
            version=VERSION,
            endpoint=f"127.0.0.1:{ssm.port}",
            scheme="http",
            secret_id="AKIDreadOnlySsmUser0001",
            secret_key="readOnlyKey0001",
        )
        assert read_settings_secret(source) == {"CAIYUN_WECHAT_SECRET": "ab" * 16}
        assert "x-tc-token" not in ssm.requests[0]["headers"]
        assert ssm.requests[0]["signature_valid"] is True


def unavailable(clean_env: pytest.MonkeyPatch) -> list[str]:
    with pytest.raises(SettingsUnavailable) as refused:
        get_settings()
    return refused.value.problems


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"CAIYUN_SSM_VERSION": "v2"}, "ResourceNotFound.SecretNotExist"),
        ({"TENCENTCLOUD_SESSIONTOKEN": "expired"}, "AuthFailure.SignatureFailure"),
        ({"TENCENTCLOUD_SECRETID": ""}, "no credentials to read it"),
        ({"CAIYUN_SSM_VERSION": ""}, "CAIYUN_SSM_VERSION is required"),
    ],
    ids=["unknown version", "wrong token", "no role", "no version"],
)
def test_a_secret_that_cannot_be_read_names_the_reason_not_the_values(
    clean_env: pytest.MonkeyPatch, ssm: TencentApiStub, change: dict[str, str], expected: str
) -> None:
    stored = secret_values()
    ssm.reply = ssm_reply(stored)
    deployed(clean_env, ssm)
    for name, value in change.items():
        clean_env.setenv(name, value)
    problems = unavailable(clean_env)
    assert expected in "; ".join(problems)
    assert not any(value in "; ".join(problems) for value in stored.values())


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        ("not json", "is not a JSON object"),
        (["a list"], "is not a JSON object"),
        ({"CAIYUN_ICBC_PRIVTE_KEY": "typo"}, "CAIYUN_ICBC_PRIVTE_KEY in the SSM secret is not"),
        ({"CAIYUN_ICBC_APP_ID": "1"}, "CAIYUN_ICBC_APP_ID is set both in the environment"),
    ],
    ids=["text", "list", "unknown setting", "set twice"],
)
def test_a_secret_that_is_not_a_set_of_settings_is_refused_by_name(
    clean_env: pytest.MonkeyPatch, ssm: TencentApiStub, stored: Any, expected: str
) -> None:
    def reply(record: dict[str, Any]) -> dict[str, Any]:
        text = stored if isinstance(stored, str) else json.dumps(stored)
        return {"SecretName": SECRET_NAME, "VersionId": VERSION, "SecretString": text}

    ssm.reply = reply
    deployed(clean_env, ssm)
    assert expected in "; ".join(unavailable(clean_env))


def test_a_call_to_a_function_whose_secret_is_missing_answers_unavailable_and_logs_why(
    clean_env: pytest.MonkeyPatch, ssm: TencentApiStub, caplog: pytest.LogCaptureFixture
) -> None:
    ssm.reply = ssm_reply({})
    deployed(clean_env, ssm)
    clean_env.setenv("CAIYUN_SSM_VERSION", "v9")
    install_services(None)
    logger = logging.getLogger("caiyun")
    logger.addHandler(caplog.handler)
    try:
        reply = handler("login")({"action": "check_account", "phone": "13800000000"}, {})
    finally:
        logger.removeHandler(caplog.handler)
    assert reply["ok"] is False and reply["error"]["code"] == "UNAVAILABLE"
    [line] = [json.loads(r.getMessage()) for r in caplog.records]
    assert line["code"] == "UNAVAILABLE"
    assert "ResourceNotFound.SecretNotExist" in line["settings_problems"][0]
