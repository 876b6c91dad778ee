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

Replies show a stored file by a short-lived display URL beside its id (``display_urls``): a COS
presigned GET, a CloudBase temporary URL from WeChat's ``tcb/batchdownloadfile``, or in the
sandbox a signed URL that ``caiyun dev`` serves.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import tempfile
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from caiyun.adapters.wechat import WeChatError
from caiyun.errors import AppError

if TYPE_CHECKING:
    from caiyun.adapters.wechat import WeChatClient
    from caiyun.clock import Clock
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

# What an import file may be (admin.import_upload_url): the readers of caiyun.imports.files.
SHEET_TYPES = {
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".csv": "text/csv",
}
_REFUSED = {
    id(CONTENT_TYPES): "仅支持 jpg、png、webp、gif、heic 图片",
    id(SHEET_TYPES): "仅支持 .xlsx 或 .csv 文件",
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


def _extension(filename: str, types: dict[str, str]) -> str:
    suffix = PurePosixPath(filename.replace("\\", "/")).suffix.lower()
    if suffix not in types:
        raise AppError(
            "INVALID_ARGUMENT", _REFUSED[id(types)], {"fields": {"filename": "文件类型不支持"}}
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
    def upload_target(
        self, folder: str, filename: str, types: dict[str, str] = CONTENT_TYPES
    ) -> UploadTarget:
        """Where to upload a new file named like ``filename`` (an extension of ``types``:
        images unless told) into ``folder``."""

    @abstractmethod
    def download(self, file_id: str, dest: Path) -> None:
        """Copy a stored file to ``dest`` (an import reads its file where the function runs);
        FileNotFoundError when nothing was uploaded under that id."""

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

    def display_urls(self, file_ids: list[str]) -> dict[str, str | None]:
        """A URL an ``<image>`` can show now for each file id of this storage (None for an id
        that is not this storage's, or when none can be had at the moment). Never raises: a
        reply is better without a picture than not at all."""
        mine = [fid for fid in dict.fromkeys(file_ids) if self.owns(fid)]
        urls: dict[str, str | None] = dict.fromkeys(file_ids)
        if mine:
            urls.update(self._urls(mine))
        return urls

    @abstractmethod
    def _urls(self, file_ids: list[str]) -> dict[str, str | None]:
        """Display URLs of ids this storage owns (deduplicated)."""

    @staticmethod
    def new_path(folder: str, filename: str, types: dict[str, str] = CONTENT_TYPES) -> str:
        """A fresh object path in ``folder`` keeping the upload's extension (one of ``types``)."""
        path = f"{folder.strip('/')}/{uuid.uuid4().hex}{_extension(filename, types)}"
        if not _safe_path(path):
            raise ValueError(f"unsafe storage folder {folder!r}")
        return path


class CloudBaseStorage(Storage):
    """WeChat CloudBase storage: the mini-program uploads with ``wx.cloud.uploadFile``."""

    provider = "cloudbase"
    # WeChat's tcb/batchdownloadfile (wx.cloud.getTempFileURL) takes at most 50 ids per call.
    BATCH = 50
    _CACHED = 2048

    def __init__(
        self,
        env_id: str,
        wechat: WeChatClient | None = None,
        clock: Clock | None = None,
        ttl_s: int = 3600,
    ) -> None:
        if not _ENV_ID.fullmatch(env_id):
            raise ValueError("CAIYUN_CLOUDBASE_ENV must be a CloudBase environment id")
        self.env_id = env_id
        self._prefix = f"cloud://{env_id}."
        self._wechat = wechat
        self._clock = clock
        self.ttl_s = ttl_s
        # file id -> (URL, when to stop handing it out): the same picture shown again within
        # half its lifetime costs no WeChat call.
        self._cache: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()

    def owns(self, file_id: str) -> bool:
        """``cloud://<env>.<bucket>/<path>`` of this environment."""
        if not file_id.startswith(self._prefix):
            return False
        bucket, slash, path = file_id[len(self._prefix) :].partition("/")
        return bool(slash) and bool(_CLOUDBASE_BUCKET.fullmatch(bucket)) and _safe_path(path)

    def upload_target(
        self, folder: str, filename: str, types: dict[str, str] = CONTENT_TYPES
    ) -> UploadTarget:
        """A ``cloudPath`` for ``wx.cloud.uploadFile``, which returns the file id."""
        return UploadTarget(
            provider=self.provider, path=self.new_path(folder, filename, types), file_id=None
        )

    def download(self, file_id: str, dest: Path) -> None:
        """Through a temporary URL from WeChat (tcb/batchdownloadfile), streamed to ``dest``."""
        import requests

        url = self._urls([file_id]).get(file_id) if self.owns(file_id) else None
        if not url:
            raise FileNotFoundError(file_id)
        with requests.get(url, stream=True, timeout=30) as reply:
            if reply.status_code == 404:
                raise FileNotFoundError(file_id)
            reply.raise_for_status()
            with dest.open("wb") as out:
                for chunk in reply.iter_content(1 << 16):
                    out.write(chunk)

    def _now(self) -> float:
        return self._clock.now().timestamp() if self._clock is not None else time.time()

    def _urls(self, file_ids: list[str]) -> dict[str, str | None]:
        """Temporary URLs from WeChat, ``BATCH`` ids per call, kept for half their lifetime."""
        now = self._now()
        found: dict[str, str | None] = {}
        with self._lock:
            for fid in file_ids:
                kept = self._cache.get(fid)
                if kept is not None and kept[1] > now:
                    found[fid] = kept[0]
        wanted = [fid for fid in file_ids if fid not in found]
        if not wanted or self._wechat is None:
            return found
        for start in range(0, len(wanted), self.BATCH):
            batch = wanted[start : start + self.BATCH]
            try:
                fetched = self._wechat.temp_file_urls(self.env_id, batch, self.ttl_s)
            except WeChatError:
                continue
            found.update(fetched)
            with self._lock:
                for fid, url in fetched.items():
                    if url:
                        self._cache[fid] = (url, now + self.ttl_s / 2)
                        self._cache.move_to_end(fid)
                while len(self._cache) > self._CACHED:
                    self._cache.popitem(last=False)
        return found


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
        self.display_ttl_s = settings.display_url_ttl_s
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

    def upload_target(
        self, folder: str, filename: str, types: dict[str, str] = CONTENT_TYPES
    ) -> UploadTarget:
        """A presigned PUT URL; the upload must send the returned Content-Type header."""
        key = self.new_path(folder, filename, types)
        content_type = types[PurePosixPath(key).suffix]
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

    def download(self, file_id: str, dest: Path) -> None:
        """GetObject, streamed to ``dest`` by boto3's transfer manager."""
        from botocore.exceptions import ClientError

        if not self.owns(file_id):
            raise FileNotFoundError(file_id)
        try:
            self.client().download_file(self.bucket, file_id[len(self._prefix) :], str(dest))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey"):
                raise FileNotFoundError(file_id) from None
            raise

    def _urls(self, file_ids: list[str]) -> dict[str, str | None]:
        """Presigned GET URLs (signed locally: no request leaves the function)."""
        client = self.client()
        return {
            fid: client.generate_presigned_url(
                "get_object",
                Params={"Bucket": self.bucket, "Key": fid[len(self._prefix) :]},
                ExpiresIn=self.display_ttl_s,
            )
            for fid in file_ids
        }


class SandboxStorage(Storage):
    """Local files for ``caiyun dev`` and the tests: ``sandbox://files/<path>``.

    Files live in ``<data_dir>/files``, or in a temporary directory made on first write when
    there is no data directory. ``caiyun dev`` serves them at ``<base_url>/files/<path>``:
    a GET shows one, a PUT (as to COS) keeps its bytes, each on a URL signed here that expires
    (``verify``).
    """

    provider = "sandbox"
    PREFIX = "sandbox://files/"
    DEFAULT_BASE_URL = "http://127.0.0.1:8787"

    def __init__(
        self,
        data_dir: str,
        secret: bytes = b"sandbox-files",
        clock: Clock | None = None,
        ttl_s: int = 3600,
    ) -> None:
        self._root = Path(data_dir) / "files" if data_dir else None
        self._lock = threading.Lock()
        self._secret = secret
        self._clock = clock
        self.ttl_s = ttl_s
        self.base_url = self.DEFAULT_BASE_URL

    def serve_at(self, base_url: str) -> None:
        """Sign URLs for the sandbox server listening at ``base_url``."""
        self.base_url = base_url.rstrip("/")

    def _now(self) -> int:
        return int(self._clock.now().timestamp() if self._clock is not None else time.time())

    def _signature(self, method: str, path: str, expires: int) -> str:
        message = f"{method}\n{path}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def signed_url(self, method: str, path: str, ttl_s: int) -> str:
        """The URL of ``path`` (under ``files/``) for ``method``, valid at least ``ttl_s``
        seconds. The expiry is rounded up to a whole number of ``ttl_s`` periods, so the same
        file asked for again within one gets the same URL (the app's image cache keeps it)."""
        expires = (self._now() // ttl_s + 2) * ttl_s
        signature = self._signature(method, path, expires)
        return f"{self.base_url}/files/{path}?expires={expires}&signature={signature}"

    def verify(self, method: str, path: str, expires: str, signature: str) -> bool:
        """Whether a request for ``path`` carries an unexpired signature for ``method``."""
        if not expires.isdigit() or int(expires) < self._now() or not _safe_path(path):
            return False
        return hmac.compare_digest(self._signature(method, path, int(expires)), signature)

    def _urls(self, file_ids: list[str]) -> dict[str, str | None]:
        return {
            fid: self.signed_url("GET", fid[len(self.PREFIX) :], self.ttl_s) for fid in file_ids
        }

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

    def upload_target(
        self, folder: str, filename: str, types: dict[str, str] = CONTENT_TYPES
    ) -> UploadTarget:
        """A ready file id: the sandbox needs no bytes to accept it. To see the picture later,
        PUT the bytes to ``url`` (served by ``caiyun dev``)."""
        path = self.new_path(folder, filename, types)
        return UploadTarget(
            provider=self.provider,
            path=path,
            file_id=self.PREFIX + path,
            url=self.signed_url("PUT", path, self.ttl_s),
            method="PUT",
            headers={"Content-Type": types[PurePosixPath(path).suffix]},
            expires_in_s=self.ttl_s,
        )

    def download(self, file_id: str, dest: Path) -> None:
        """A copy of the kept bytes."""
        import shutil

        shutil.copyfile(self._local(file_id), dest)

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


def build_storage(
    settings: Settings, wechat: WeChatClient | None = None, clock: Clock | None = None
) -> Storage:
    """The storage a settings profile selects (CloudBase asks ``wechat`` for display URLs)."""
    ttl = settings.display_url_ttl_s
    if settings.storage_provider == "cloudbase":
        return CloudBaseStorage(settings.cloudbase_env, wechat, clock, ttl)
    if settings.storage_provider == "cos":
        return CosStorage(settings)
    secret = hmac.new(
        settings.token_secret.get_secret_value().encode(), b"sandbox-files", hashlib.sha256
    ).digest()
    return SandboxStorage(settings.data_dir, secret, clock, ttl)
