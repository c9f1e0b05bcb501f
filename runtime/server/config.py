"""ServeConfig: everything smp-serve is told, checked once, frozen."""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import ServeConfigError
from ..providers import DEVICES

log = logging.getLogger(__name__)

SEQ_OVERFLOW = ("truncate", "reject")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


@dataclass(frozen=True)
class ServeConfig:
    """How smp-serve serves one export directory.

    ``max_queue`` bounds the requests admitted to the batcher (waiting or running); past it
    the server answers 503 + Retry-After. ``max_texts`` bounds the rows of one request,
    ``max_seq_len`` its tokens per row: text longer than that is truncated or refused (413)
    as ``seq_overflow`` says; token-id tensors longer than that are always refused (cutting
    them would drop the final [SEP]). A connection must send a complete request head within
    ``header_timeout_s`` of opening or of its previous response (so idle keep-alive connections
    close after it too); at most ``max_connections`` are open at once.
    """

    export_dir: Path
    model_name: str = ""                    # "" -> the export directory's name
    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "cpu"
    max_batch: int = 32                     # rows merged into one onnxruntime run
    max_delay_ms: float = 5.0               # how long the first queued request waits for company
    max_queue: int = 256                    # requests admitted (waiting + running)
    max_texts: int = 64                     # rows per request (texts or tensor batch)
    max_seq_len: int = 128
    seq_overflow: str = "truncate"          # truncate | reject (text only)
    max_body_bytes: int = 2 * 1024 * 1024
    api_key: str | None = None
    intra_op_threads: int | None = None
    shutdown_timeout_s: float = 30.0
    retry_after_s: int = 1
    header_timeout_s: float = 10.0          # complete request head within this (and keep-alive idle)
    max_connections: int = 1024             # open connections; past it: 503, closed

    def __post_init__(self) -> None:
        object.__setattr__(self, "export_dir", Path(self.export_dir))
        if not self.model_name:
            object.__setattr__(self, "model_name", sanitize_model_name(self.export_dir.resolve().name))
        if not _NAME_RE.match(self.model_name):
            raise ServeConfigError("model name must be 1-128 characters of letters, digits, '_', "
                                   f"'.', '-' (got {self.model_name!r})", field="--model-name")
        if self.device not in DEVICES:
            raise ServeConfigError(f"one of {', '.join(DEVICES)}", field="--device")
        if self.seq_overflow not in SEQ_OVERFLOW:
            raise ServeConfigError(f"one of {', '.join(SEQ_OVERFLOW)}", field="--seq-overflow")
        if not 0 <= self.port <= 65535:
            raise ServeConfigError("must be in 0..65535", field="--port")
        for name in ("max_batch", "max_queue", "max_texts", "max_body_bytes", "retry_after_s",
                     "max_connections"):
            if getattr(self, name) < 1:
                raise ServeConfigError("must be >= 1", field=f"--{name.replace('_', '-')}")
        if self.max_seq_len < 2:
            raise ServeConfigError("must be >= 2 (room for [CLS] and [SEP])", field="--max-seq-len")
        if self.max_delay_ms < 0 or self.shutdown_timeout_s < 0:
            raise ServeConfigError("delays and timeouts must be >= 0", field="--max-delay-ms")
        if not self.header_timeout_s > 0:
            raise ServeConfigError("must be > 0 seconds", field="--header-timeout")
        if self.api_key is not None and not self.api_key:
            raise ServeConfigError("the API key is empty", field="--api-key-file")

    @property
    def is_loopback(self) -> bool:
        """Whether ``host`` only accepts connections from this machine."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def sanitize_model_name(name: str) -> str:
    """A protocol-safe model name from a directory name (other characters become '-')."""
    cleaned = re.sub(r"[^A-Za-z0-9_.\-]", "-", name).strip("-.") or "model"
    return cleaned[:128]


def read_api_key(path: str | Path) -> str:
    """The bearer token in ``path`` (surrounding whitespace stripped); warns when others can read it."""
    path = Path(path)
    try:
        key = path.read_text(encoding="utf-8").strip()
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise ServeConfigError(f"cannot read the API key: {exc}", path=path,
                               field="--api-key-file") from exc
    if not key:
        raise ServeConfigError("the API key file is empty", path=path, field="--api-key-file")
    if os.name == "posix" and mode & (stat.S_IRGRP | stat.S_IROTH):
        log.warning("%s is readable by other users; chmod 600 it", path)
    return key
