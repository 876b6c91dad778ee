"""File storage: COS presigned uploads under moto, and which file ids each provider accepts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from conftest import TEST_START

from caiyun.adapters.storage import (
    CloudBaseStorage,
    CosStorage,
    SandboxStorage,
    build_storage,
)
from caiyun.clock import OffsetClock
from caiyun.errors import AppError
from caiyun.settings import Settings

BUCKET = "caiyun-1250000000"
ENV_ID = "prod-4g2k7x"


def cos_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "storage_provider": "cos",
        "cos_bucket": BUCKET,
        "cos_region": "ap-guangzhou",
        "cos_secret_id": "AKIDEXAMPLE",
        "cos_secret_key": "example-secret-key",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from moto import mock_aws

    # Nothing here may reach a real account, whatever the developer's shell holds.
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        yield


def test_a_presigned_put_uploads_the_object_under_its_file_id(aws: None) -> None:
    # moto answers S3 on amazonaws.com hosts; the client code is the same for COS's endpoint.
    storage = CosStorage(cos_settings(cos_endpoint="https://s3.ap-guangzhou.amazonaws.com"))
    storage.client().create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "ap-guangzhou"}
    )
    target = storage.upload_target("repair/report/acct1", "wx_tmp_123.PNG")

    assert target.provider == "cos" and target.method == "PUT"
    assert target.path.startswith("repair/report/acct1/") and target.path.endswith(".png")
    assert target.file_id == f"cos://{BUCKET}/{target.path}"
    assert target.headers == {"Content-Type": "image/png"}
    assert target.url is not None
    assert urlsplit(target.url).hostname == f"{BUCKET}.s3.ap-guangzhou.amazonaws.com"

    sent = requests.put(target.url, data=b"\x89PNG fake", headers=target.headers, timeout=5)
    assert sent.status_code == 200
    stored = storage.client().get_object(Bucket=BUCKET, Key=target.path)
    assert stored["Body"].read() == b"\x89PNG fake"
    assert stored["ContentType"] == "image/png"
    assert storage.check_file_ids([target.file_id]) == [target.file_id]


def test_an_import_file_is_put_to_cos_and_read_back_where_the_function_runs(
    aws: None, tmp_path: Path
) -> None:
    from caiyun.adapters.storage import SHEET_TYPES

    storage = CosStorage(cos_settings(cos_endpoint="https://s3.ap-guangzhou.amazonaws.com"))
    storage.client().create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "ap-guangzhou"}
    )
    target = storage.upload_target("imports/acct1", "账单.csv", SHEET_TYPES)
    assert target.headers == {"Content-Type": "text/csv"} and target.path.endswith(".csv")
    assert target.url is not None and target.file_id is not None
    body = "楼栋,单元\n1,1\n".encode()
    assert requests.put(target.url, data=body, headers=target.headers, timeout=5).status_code == 200
    storage.download(target.file_id, tmp_path / "copy.csv")
    assert (tmp_path / "copy.csv").read_bytes() == body
    with pytest.raises(FileNotFoundError):
        storage.download(f"cos://{BUCKET}/imports/acct1/never-sent.csv", tmp_path / "none.csv")


def test_a_display_url_is_a_presigned_get_that_fetches_the_object(aws: None) -> None:
    storage = CosStorage(
        cos_settings(cos_endpoint="https://s3.ap-guangzhou.amazonaws.com", display_url_ttl_s=600)
    )
    storage.client().create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": "ap-guangzhou"}
    )
    target = storage.upload_target("repair/report/acct1", "leak.jpg")
    assert target.url is not None and target.file_id is not None
    requests.put(target.url, data=b"jpeg bytes", headers=target.headers, timeout=5)

    urls = storage.display_urls([target.file_id, "cloud://elsewhere.b/x.jpg"])

    url = urls[target.file_id]
    assert url is not None and urls["cloud://elsewhere.b/x.jpg"] is None
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["600"] and "example-secret-key" not in url
    shown = requests.get(url, timeout=5)
    assert (shown.status_code, shown.content) == (200, b"jpeg bytes")


def test_urls_point_at_the_cos_endpoint_signed_for_the_content_type() -> None:
    # Presigning is local: no request leaves the process.
    storage = CosStorage(cos_settings(upload_url_ttl_s=600))
    target = storage.upload_target("repair/completion/acct9", "photo.jpeg")
    assert target.url is not None
    url = urlsplit(target.url)
    query = parse_qs(url.query)
    assert url.scheme == "https"
    assert url.hostname == f"{BUCKET}.cos.ap-guangzhou.myqcloud.com"
    assert url.path == f"/{target.path}"
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Expires"] == ["600"]
    assert query["X-Amz-Credential"][0].startswith("AKIDEXAMPLE/")
    assert "content-type" in query["X-Amz-SignedHeaders"][0].split(";")
    assert target.expires_in_s == 600
    assert "example-secret-key" not in target.url


def test_the_s3_client_is_made_once_per_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    made: list[str] = []
    real = boto3.client

    def counting(*args: Any, **kwargs: Any) -> Any:
        made.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(boto3, "client", counting)
    storage = CosStorage(cos_settings())
    for _ in range(3):
        storage.upload_target("repair/report/a", "a.jpg")
    assert made == ["s3"]


def test_importing_the_layer_and_the_repair_function_does_not_load_boto3() -> None:
    index = Path(__file__).resolve().parents[2] / "functions" / "repair" / "index.py"
    script = (
        "import sys, importlib.util\n"
        "import caiyun.adapters.storage, caiyun.services\n"
        f"spec = importlib.util.spec_from_file_location('f', {str(index)!r})\n"
        "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
        "print('boto3' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(
    "file_id",
    [
        "cos://other-1250000000/repair/a.jpg",
        f"cos://{BUCKET}",
        f"cos://{BUCKET}/",
        f"cos://{BUCKET}/../secrets/a.jpg",
        f"cos://{BUCKET}/repair//a.jpg",
        f"cos://{BUCKET}/a.jpg?x-cos-acl=public",
        f"cos://{BUCKET}-evil/a.jpg",
        f"https://{BUCKET}.cos.ap-guangzhou.myqcloud.com/a.jpg",
        f"cloud://{ENV_ID}.7072-{ENV_ID}-1250000000/a.jpg",
        "sandbox://files/a.jpg",
        "",
    ],
)
def test_cos_refuses_ids_of_anything_but_its_own_bucket(file_id: str) -> None:
    storage = CosStorage(cos_settings())
    good = f"cos://{BUCKET}/repair/report/a/1.jpg"
    with pytest.raises(AppError) as refused:
        storage.check_file_ids([good, file_id], "photos")
    assert refused.value.code == "INVALID_ARGUMENT"
    assert refused.value.details == {"fields": {"photos.1": "不是本应用上传的文件"}}


def test_cloudbase_accepts_file_ids_of_its_environment_only() -> None:
    storage = build_storage(Settings(storage_provider="cloudbase", cloudbase_env=ENV_ID))
    assert isinstance(storage, CloudBaseStorage)
    mine = f"cloud://{ENV_ID}.7072-{ENV_ID}-1250000000/repair/报修/1.jpg"
    assert storage.check_file_ids([mine, mine]) == [mine]
    for foreign in (
        f"cloud://{ENV_ID}x.7072-{ENV_ID}x-1250000000/a.jpg",
        "cloud://other-env.7072-other-env-1250000000/a.jpg",
        f"cloud://{ENV_ID}.7072-{ENV_ID}-1250000000",
        f"cloud://{ENV_ID}.bucket.with.dots/a.jpg",
        f"cloud://{ENV_ID}.7072-{ENV_ID}-1250000000/../a.jpg",
        f"cloud://{ENV_ID}/a.jpg",
    ):
        assert not storage.owns(foreign), foreign
    target = storage.upload_target("repair/report/acct1", "a.webp")
    assert target.file_id is None and target.url is None
    assert target.path.startswith("repair/report/acct1/") and target.path.endswith(".webp")


def test_the_sandbox_keeps_files_in_the_data_directory(tmp_path: Path) -> None:
    storage = build_storage(Settings(data_dir=str(tmp_path)))
    assert isinstance(storage, SandboxStorage)
    target = storage.upload_target("repair/report/acct1", "a.jpg")
    assert target.file_id is not None and target.file_id.startswith("sandbox://files/repair/")
    where = storage.put(target.file_id, b"jpeg bytes")
    assert where == tmp_path / "files" / target.path
    assert storage.read(target.file_id) == b"jpeg bytes"
    assert storage.check_file_ids([target.file_id]) == [target.file_id]
    for foreign in ("sandbox://files/../escape.jpg", "sandbox://files/", "file:///etc/passwd"):
        assert not storage.owns(foreign), foreign
        with pytest.raises(ValueError):
            storage.put(foreign, b"x")


def test_sandbox_urls_are_signed_for_one_method_and_path_and_expire() -> None:
    clock = OffsetClock(start=TEST_START)
    storage = SandboxStorage("", b"k" * 32, clock, ttl_s=3600)
    storage.serve_at("http://127.0.0.1:9999/")
    file_id = "sandbox://files/repair/report/a/1.jpg"

    url = storage.display_urls([file_id])[file_id]

    assert url is not None and url.startswith("http://127.0.0.1:9999/files/repair/report/a/1.jpg?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    path = "repair/report/a/1.jpg"
    assert storage.verify("GET", path, query["expires"], query["signature"])
    assert not storage.verify("PUT", path, query["expires"], query["signature"])
    assert not storage.verify("GET", "repair/report/a/2.jpg", query["expires"], query["signature"])
    later = str(int(query["expires"]) + 60)
    assert not storage.verify("GET", path, later, query["signature"])
    # Asked again within the hour: the same URL (the app's image cache keeps it).
    assert storage.display_urls([file_id])[file_id] == url
    clock.advance(int(query["expires"]) - TEST_START.timestamp() + 1)
    assert not storage.verify("GET", path, query["expires"], query["signature"])


def test_without_a_data_directory_the_sandbox_uses_a_temporary_one() -> None:
    storage = SandboxStorage("")
    file_id = "sandbox://files/a/b.png"
    path = storage.put(file_id, b"png")
    assert path.is_file() and path.is_relative_to(storage.root)
    assert storage.read(file_id) == b"png"
    shutil.rmtree(storage.root)


@pytest.mark.parametrize("filename", ["notes.txt", "photo", "a.jpg.exe", "archive.zip"])
def test_only_images_get_an_upload_target(filename: str) -> None:
    with pytest.raises(AppError) as refused:
        SandboxStorage("").upload_target("repair/report/a", filename)
    assert refused.value.details == {"fields": {"filename": "文件类型不支持"}}


def production_problems(**fields: Any) -> str:
    """Why a production profile with these fields is refused ("" if it is not)."""
    try:
        Settings(env="production", **fields)
    except ValueError as refused:
        return str(refused)
    return ""


def test_production_needs_the_chosen_storage_configured() -> None:
    cos = production_problems(storage_provider="cos")
    for name in ("CAIYUN_COS_BUCKET", "CAIYUN_COS_SECRET_ID", "CAIYUN_COS_SECRET_KEY"):
        assert f"{name} is required" in cos
    # A CAM key pair as the console issues it (production refuses implausible ones).
    configured = production_problems(
        storage_provider="cos",
        cos_bucket=BUCKET,
        cos_secret_id="AKID0123456789abcdefghijABCDEFGHIJkl",
        cos_secret_key="mnopqrstuvwxyzKLMNOPQRSTUVWXYZ98",
    )
    assert "CAIYUN_COS" not in configured
    assert "CAIYUN_CLOUDBASE_ENV is required" in production_problems(storage_provider="cloudbase")
    assert "CLOUDBASE" not in production_problems(
        storage_provider="cloudbase", cloudbase_env=ENV_ID
    )
