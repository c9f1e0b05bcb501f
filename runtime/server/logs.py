"""Structured logs: one JSON object per line (``--log-format json``) or plain text.

Either way one record is one line: the text format escapes control characters in the
message (a ``%0A`` in a request path cannot forge a log line), and the JSON format is always
valid JSON (non-finite numbers are written as strings).
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from datetime import datetime, timezone
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
# C0 controls, DEL, C1 controls, lone surrogates, and the Unicode line / paragraph separators.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _escape_one(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_control(text: str) -> str:
    """``text`` with control characters (and lone surrogates) as ``\\xNN`` / ``\\uNNNN`` escapes."""
    return _UNSAFE.sub(_escape_one, text)


def _finite(value: Any) -> Any:
    """``value`` with NaN / infinities (at any depth) replaced by their names as strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class JsonFormatter(logging.Formatter):
    """ts, level, logger, msg, and every ``extra=`` field of the record."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
        entry = {"ts": ts,
                 "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        try:
            return json.dumps(entry, default=str, allow_nan=False)
        except ValueError:                       # a NaN or infinity somewhere in the extras
            return json.dumps(_finite(entry), default=str, allow_nan=False)


class TextFormatter(logging.Formatter):
    """``asctime level logger: message``, the message's control characters escaped."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        return escape_control(super().formatMessage(record))


def configure_logging(fmt: str = "text", level: str = "INFO") -> None:
    """Root logging to stderr in ``fmt`` ('json' or 'text')."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
