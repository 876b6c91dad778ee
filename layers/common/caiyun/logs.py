"""One structured log line per call, with personal data and secrets masked."""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

_logger = logging.getLogger("caiyun")

# A mainland mobile, bare or in the +86 form SMS providers use.
_PHONE = re.compile(r"(?:(?<=86)|(?<!\d))(1[3-9]\d)\d{4}(\d{4})(?!\d)")
_ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])(\d{4})\d{10}(\d{3}[\dXx])(?![0-9A-Za-z])")
_CARD = re.compile(r"(?<!\d)(\d{4})\d{8,11}(\d{4})(?!\d)")
_SHORT_CODE = re.compile(r"(?<!\d)\d{4,8}(?!\d)")
_TOKEN = re.compile(r"\b[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b")


def redact(text: str) -> str:
    """Mask phone, ID and card numbers, verification codes and tokens in free text."""
    text = _TOKEN.sub("[token]", text)
    text = _ID_NUMBER.sub(r"\1**********\2", text)
    text = _PHONE.sub(r"\1****\2", text)
    text = _CARD.sub(r"\1********\2", text)
    return _SHORT_CODE.sub("******", text)


_configured = False


def _quiet_http_client_logs() -> None:
    # At DEBUG, urllib3 logs every request line, and WeChat wants its secret, login code and
    # access token in the query string: those lines must never be written.
    logging.getLogger("urllib3").setLevel(max(logging.getLogger("urllib3").level, logging.INFO))


def _ensure_handler() -> None:
    # Our own flag, not "has any handler": a handler added by a host (or a test runner) must
    # not silently stop the structured line from reaching stdout, where SCF collects it.
    global _configured
    if not _configured:
        _configured = True
        _quiet_http_client_logs()
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        _logger.addHandler(handler)
        _logger.setLevel(logging.INFO)
        _logger.propagate = False


# Fields that may carry text from outside (exception messages); the others are ids and names
# the runtime produced itself.
_FREE_TEXT = frozenset({"error", "exception"})


def log_call(fields: dict[str, Any]) -> None:
    """Write one JSON line describing a finished call; free-text values are redacted."""
    _ensure_handler()
    safe = {
        k: redact(v) if k in _FREE_TEXT and isinstance(v, str) else v for k, v in fields.items()
    }
    level = logging.ERROR if safe.get("code") == "INTERNAL" else logging.INFO
    _logger.log(level, json.dumps(safe, ensure_ascii=False, separators=(",", ":")))
