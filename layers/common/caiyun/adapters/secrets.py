"""Settings kept in Tencent Cloud Secrets Manager (SSM), read once per warm container.

The environment only names the secret (``CAIYUN_SSM_SECRET`` and ``CAIYUN_SSM_VERSION``); its
text is a JSON object of setting variables (``{"MONGODB_URI": "…", "CAIYUN_ICBC_PRIVATE_KEY":
"…"}``), which :func:`caiyun.settings.get_settings` lays under the environment. One
``GetSecretValue`` call (ssm v20190923) per cold start.

Credentials, in this order:
- ``CAIYUN_SSM_SECRET_ID`` / ``CAIYUN_SSM_SECRET_KEY``: a CAM sub-user's API key that may only
  read this secret, for hosts that give a function no role of its own (WeChat CloudBase);
- otherwise the temporary credentials SCF hands a function that has an execution role, in
  ``TENCENTCLOUD_SECRETID`` / ``TENCENTCLOUD_SECRETKEY`` / ``TENCENTCLOUD_SESSIONTOKEN``.

The secret's version is not optional: SSM's ``GetSecretValue`` takes ``SecretName`` and
``VersionId`` (tencentcloud-sdk-python-ssm, ``GetSecretValueRequest``), and pinning it means a
new version reaches functions only when the deploy says so.
"""

from __future__ import annotations

import json
import os
from typing import Literal

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class SecretStoreError(Exception):
    """The secret could not be read; the message names the secret and SSM's error code."""


class SecretStoreSettings(BaseSettings):
    """Where the settings secret is: field ``x`` is read from ``CAIYUN_SSM_X``."""

    model_config = SettingsConfigDict(
        env_prefix="CAIYUN_SSM_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    secret: str = ""
    version: str = ""
    # Empty: the function's own region (SCF sets TENCENTCLOUD_REGION).
    region: str = ""
    endpoint: str = "ssm.tencentcloudapi.com"
    scheme: Literal["https", "http"] = "https"
    secret_id: SecretStr = SecretStr("")
    secret_key: SecretStr = SecretStr("")
    timeout_s: float = 5.0


def _credential(source: SecretStoreSettings) -> object:
    from tencentcloud.common import credential

    if source.secret_id.get_secret_value():
        return credential.Credential(
            source.secret_id.get_secret_value(), source.secret_key.get_secret_value()
        )
    secret_id = os.environ.get("TENCENTCLOUD_SECRETID", "")
    secret_key = os.environ.get("TENCENTCLOUD_SECRETKEY", "")
    if not (secret_id and secret_key):
        raise SecretStoreError(
            "CAIYUN_SSM_SECRET is set but there are no credentials to read it: give the function "
            "an execution role that may read the secret (SCF), or set CAIYUN_SSM_SECRET_ID and "
            "CAIYUN_SSM_SECRET_KEY"
        )
    return credential.Credential(
        secret_id, secret_key, os.environ.get("TENCENTCLOUD_SESSIONTOKEN") or None
    )


def read_settings_secret(source: SecretStoreSettings | None = None) -> dict[str, str]:
    """The setting variables the named SSM secret holds, as ``{variable: value}``."""
    from tencentcloud.common.exception.tencent_cloud_sdk_exception import (
        TencentCloudSDKException,
    )
    from tencentcloud.common.profile.client_profile import ClientProfile
    from tencentcloud.common.profile.http_profile import HttpProfile
    from tencentcloud.ssm.v20190923 import models, ssm_client

    source = source or SecretStoreSettings()
    where = f"SSM secret {source.secret!r} version {source.version!r}"
    if not source.version:
        raise SecretStoreError("CAIYUN_SSM_VERSION is required with CAIYUN_SSM_SECRET")
    region = source.region or os.environ.get("TENCENTCLOUD_REGION") or "ap-guangzhou"
    http = HttpProfile(
        endpoint=source.endpoint, protocol=source.scheme, reqTimeout=int(source.timeout_s)
    )
    client = ssm_client.SsmClient(_credential(source), region, ClientProfile(httpProfile=http))
    request = models.GetSecretValueRequest()
    request.SecretName = source.secret
    request.VersionId = source.version
    try:
        reply = client.GetSecretValue(request)
    except TencentCloudSDKException as exc:
        # The SDK's message may carry the request; only its code and request id leave here.
        raise SecretStoreError(
            f"{where} could not be read: {exc.get_code()} (request {exc.get_request_id()})"
        ) from None
    try:
        values = json.loads(reply.SecretString or "")
    except ValueError:
        values = None
    if not isinstance(values, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in values.items()
    ):
        raise SecretStoreError(f"{where} is not a JSON object of setting names and text values")
    return values
