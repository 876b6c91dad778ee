"""Files: which file ids belong to this deployment, and where the mini-program uploads them.

The mini-program uploads a file first and hands actions its file id. An action accepts only ids
of the storage this deployment is configured for (``CAIYUN_STORAGE_PROVIDER``), so nobody can
attach a file from another bucket, another CloudBase environment or a URL of their choosing:

- ``cloudbase``: ``cloud://<CAIYUN_CLOUDBASE_ENV>.<bucket>/<path>``, the fileID that
  ``wx.cloud.uploadFile`` returns;
- ``cos``: ``cos://<CAIYUN_COS_BUCKET>/<key>``, uploaded by HTTP PUT to a presigned URL;
- ``sandbox``: ``sandbox://files/<path>``, accepted as is; bytes, when some are kept, live in
  ``<data_dir>/files``.

Ids are checked by form, not by asking the storage whether the object exists: the check costs
nothing, and a missing object only shows as a broken picture to the people who already see it.
"""

from __future__ import annotations

import re
import tempfile
import threading
import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from caiyun.errors import AppError

if TYPE_CHECKING:
    from caiyun.settings import Settings

# What an upload may be, by the extension of the name the mini-program gives it.
CONTENT_TYPES = {
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".gif": "image/gif",
    ".heic": "image/heic",
}

_MAX_PATH = 1024
# Printable text without a query, fragment or backslash: ids end up in URLs and file paths.
_PATH_CHARS = re.compile(r"[^\x00-\x1f\x7f\\?#]+")
_ENV_ID = re.compile(r"[a-z0-9][a-z0-9-]*")
_CLOUDBASE_BUCKET = re.compile(r"[A-Za-z0-9-]+")


def _safe_path(path: str) -> bool:
    # No absolute paths, empty or dot segments: a path never climbs out of its bucket or folder.
    if not path or len(path) > _MAX_PATH or not _PATH_CHARS.fullmatch(path):
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def _extension(filename: str) -> str:
    suffix = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
    if suffix not in CONTENT_TYPES:
        raise AppError(
            "INVALID_ARGUMENT",
            "仅支持 jpg、png、webp、gif、heic 图片",
            {"fields": {"filename": "文件类型不支持"}},
        )
    return suffix


@dataclass(frozen=True)
class UploadTarget:
    """Where one file goes.

    ``path`` is the object's path in the bucket (the ``cloudPath`` for ``wx.cloud.uploadFile``).
    ``file_id`` is known in advance except on CloudBase, where ``wx.cloud.uploadFile`` returns
    it. ``url`` (with ``method`` and ``headers``) is where to send the bytes, valid for
    ``expires_in_s``; None when the mini-program uploads through its own SDK or, in the
    sandbox, does not upload at all.
    """

    provider: str
    path: str
    file_id: str | None
    url: str | None = None
    method: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    expires_in_s: int | None = None


class Storage(ABC):
    """The storage of one deployment: subclasses say which ids are theirs and how to upload."""

    provider = ""

    @abstractmethod
    def owns(self, file_id: str) -> bool:
        """Whether ``file_id`` names a file in this deployment's storage."""

    @abstractmethod
    def upload_target(self, folder: str, filename: str) -> UploadTarget:
        """Where to upload a new file named like ``filename`` into ``folder``."""

    def check_file_ids(
        self, ids: list[str], field: str = "images", uploader: str | None = None
    ) -> list[str]:
        """The ids, without repeats, if every one is this deployment's (and, with ``uploader``,
        was uploaded by that account: every upload slot sits under its uploader's id); else
        INVALID_ARGUMENT naming each refused entry as ``<field>.<index>``.
        """
        bad = {
            f"{field}.{i}": "不是本应用上传的文件"
            for i, fid in enumerate(ids)
            if not self.owns(fid) or (uploader is not None and f"/{uploader}/" not in fid)
        }
        if bad:
            raise AppError("INVALID_ARGUMENT", "文件无效，请重新上传", {"fields": bad})
        return list(dict.fromkeys(ids))

    @staticmethod
    def new_path(folder: str, filename: str) -> str:
        """A fresh object path in ``folder`` keeping the upload's image extension."""
        path = f"{folder.strip('/')}/{uuid.uuid4().hex}{_extension(filename)}"
        if not _safe_path(path):
            raise ValueError(f"unsafe storage folder {folder!r}")
        return path


class CloudBaseStorage(Storage):
    """WeChat CloudBase storage: the mini-program uploads with ``wx.cloud.uploadFile``."""

    provider = "cloudbase"

    def __init__(self, env_id: str) -> None:
        if not _ENV_ID.fullmatch(env_id):
            raise ValueError("CAIYUN_CLOUDBASE_ENV must be a CloudBase environment id")
        self.env_id = env_id
        self._prefix = f"cloud://{env_id}."

    def owns(self, file_id: str) -> bool:
        """``cloud://<env>.<bucket>/<path>`` of this environment."""
        if not file_id.startswith(self._prefix):
            return False
        bucket, slash, path = file_id[len(self._prefix) :].partition("/")
        return bool(slash) and bool(_CLOUDBASE_BUCKET.fullmatch(bucket)) and _safe_path(path)

    def upload_target(self, folder: str, filename: str) -> UploadTarget:
        """A ``cloudPath`` for ``wx.cloud.uploadFile``, which returns the file id."""
        return UploadTarget(
            provider=self.provider, path=self.new_path(folder, filename), file_id=None
        )


class CosStorage(Storage):
    """Tencent COS through its S3-compatible API: uploads go to presigned PUT URLs.

    boto3 is imported on first use and its client is made once per instance (per warm
    container), not per call.
    """

    provider = "cos"

    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.cos_bucket
        self.region = settings.cos_region
        self.endpoint = settings.cos_endpoint or f"https://cos.{settings.cos_region}.myqcloud.com"
        self.ttl_s = settings.upload_url_ttl_s
        self._secret_id = settings.cos_secret_id
        self._secret_key = settings.cos_secret_key
        self._prefix = f"cos://{self.bucket}/"
        self._client: Any = None
        self._lock = threading.Lock()

    def owns(self, file_id: str) -> bool:
        """``cos://<bucket>/<key>`` of this deployment's bucket."""
        return file_id.startswith(self._prefix) and _safe_path(file_id[len(self._prefix) :])

    def client(self) -> Any:
        """The S3 client for COS, made on first use."""
        if self._client is None:
            with self._lock:
                if self._client is None:
                    import boto3
                    from botocore.config import Config

                    self._client = boto3.client(
                        "s3",
                        region_name=self.region,
                        endpoint_url=self.endpoint,
                        aws_access_key_id=self._secret_id.get_secret_value(),
                        aws_secret_access_key=self._secret_key.get_secret_value(),
                        # COS serves buckets as <bucket>.cos.<region>.myqcloud.com only.
                        config=Config(signature_version="s3v4", s3={"addressing_style": "virtual"}),
                    )
        return self._client

    def upload_target(self, folder: str, filename: str) -> UploadTarget:
        """A presigned PUT URL; the upload must send the returned Content-Type header."""
        key = self.new_path(folder, filename)
        content_type = CONTENT_TYPES[PurePosixPath(key).suffix]
        url = self.client().generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": key, "ContentType": content_type},
            ExpiresIn=self.ttl_s,
            HttpMethod="PUT",
        )
        return UploadTarget(
            provider=self.provider,
            path=key,
            file_id=self._prefix + key,
            url=url,
            method="PUT",
            headers={"Content-Type": content_type},
            expires_in_s=self.ttl_s,
        )


class SandboxStorage(Storage):
    """Local files for ``caiyun dev`` and the tests: ``sandbox://files/<path>``.

    Files live in ``<data_dir>/files``, or in a temporary directory made on first write when
    there is no data directory.
    """

    provider = "sandbox"
    PREFIX = "sandbox://files/"

    def __init__(self, data_dir: str) -> None:
        self._root = Path(data_dir) / "files" if data_dir else None
        self._lock = threading.Lock()

    @property
    def root(self) -> Path:
        """The directory holding the files."""
        with self._lock:
            if self._root is None:
                self._root = Path(tempfile.mkdtemp(prefix="caiyun-files-"))
            return self._root

    def owns(self, file_id: str) -> bool:
        """``sandbox://files/<path>``."""
        return file_id.startswith(self.PREFIX) and _safe_path(file_id[len(self.PREFIX) :])

    def upload_target(self, folder: str, filename: str) -> UploadTarget:
        """A ready file id: the sandbox needs no bytes to accept it."""
        path = self.new_path(folder, filename)
        return UploadTarget(provider=self.provider, path=path, file_id=self.PREFIX + path)

    def _local(self, file_id: str) -> Path:
        if not self.owns(file_id):
            raise ValueError("not a sandbox file id")
        return self.root / file_id[len(self.PREFIX) :]

    def put(self, file_id: str, data: bytes) -> Path:
        """Keep the bytes of a sandbox file; returns where they are."""
        target = self._local(file_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return target

    def read(self, file_id: str) -> bytes:
        """The bytes of a sandbox file (FileNotFoundError if none were kept)."""
        return self._local(file_id).read_bytes()


def build_storage(settings: Settings) -> Storage:
    """The storage a settings profile selects."""
    if settings.storage_provider == "cloudbase":
        return CloudBaseStorage(settings.cloudbase_env)
    if settings.storage_provider == "cos":
        return CosStorage(settings)
    return SandboxStorage(settings.data_dir)
