"""Reading the small JSON files of an export directory (config.json, tokenizer configs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import RuntimeStageError


def read_json_object(path: Path, error: type[RuntimeStageError]) -> dict[str, Any]:
    """The JSON object in ``path``; ``{}`` when the file is absent or holds no object.

    An unreadable file or invalid JSON raises ``error`` naming the file.
    """
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise error(f"cannot read JSON: {exc}", path=path) from exc
    return data if isinstance(data, dict) else {}
