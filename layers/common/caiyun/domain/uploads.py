"""Where the mini-programs upload files (images, photos, avatars) before naming them."""

from __future__ import annotations

from caiyun.adapters.storage import UploadTarget
from caiyun.domain import create_limits
from caiyun.services import Services
from caiyun.stores.accounts import Account


def target(services: Services, account: Account, folder: str, filename: str) -> UploadTarget:
    """An upload slot in ``folder``, under the caller's own prefix so files never collide.

    Each slot counts against the caller's daily upload limit: storage is paid for by the byte.
    """
    create_limits.take_daily(services, "uploads", account["_id"])
    return services.storage.upload_target(f"{folder}/{account['_id']}", filename)
