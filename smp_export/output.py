"""The export directory: written into a temporary sibling, renamed into place at the end."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from runtime.contract import CONFIG_FILE, TOKENIZER_FILES, TOKENIZER_MODEL_FILES
from runtime.errors import TokenizerError
from runtime.tokenize import Tokenizer

from .checkpoint import PrunedCheckpoint
from .errors import CheckpointError, OutputExistsError

logger = logging.getLogger(__name__)
T = TypeVar("T")

# Keys of pruning configs that the exported (plain) config must not carry.
_PRUNING_KEYS = ("pruning_method", "mask_init", "mask_scale", "smp", "pruned_heads")
# The text every exported tokenizer is round-tripped on.
SAMPLE_TEXT = "A pruned model, exported and checked: 3 tests in 1 run."


def default_output_dir(model_dir: str | Path, fmt: str = "onnx") -> Path:
    """``./<model-name>-<fmt>`` in the current directory (``smp-export`` without ``-o``)."""
    return Path.cwd() / f"{Path(model_dir).resolve().name}-{fmt}"


def write_atomically(output_dir: Path, overwrite: bool, fill: Callable[[Path], T]) -> T:
    """``fill(tmp)`` into a fresh sibling of ``output_dir``, then rename it onto ``output_dir``.

    An existing ``output_dir`` is refused unless ``overwrite``; on any failure (an interrupt
    included) the temporary directory is removed and ``output_dir`` is left as it was.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise OutputExistsError("output directory exists (use --overwrite to replace it)", path=output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with _temporary_sibling(output_dir) as tmp:
        result = fill(tmp)
        _replace_dir(tmp, output_dir)
    return result


@contextmanager
def _temporary_sibling(output_dir: Path) -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.tmp-", dir=output_dir.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _replace_dir(tmp: Path, output_dir: Path) -> None:
    """Rename ``tmp`` onto ``output_dir``; an existing one is moved aside first, then removed."""
    old = None
    if output_dir.exists():
        old = output_dir.parent / f".{output_dir.name}.old-{os.getpid()}"
        os.replace(output_dir, old)
    os.replace(tmp, output_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_config(ckpt: PrunedCheckpoint, directory: Path) -> None:
    """A plain config.json of the architecture that optimum's ORTModel classes understand."""
    config = ckpt.config.to_dict()
    for key in _PRUNING_KEYS:
        config.pop(key, None)
    config["model_type"] = ckpt.arch.name
    # Every head but none outputs logits [batch, labels]: a sequence classifier to optimum.
    task = "none" if ckpt.head.kind == "none" else "sequence-classification"
    config["architectures"] = [ckpt.arch.classes[task].__name__]
    if ckpt.head.kind == "smp-label-words":
        labels = list(ckpt.head.label_words) or [str(t) for t in ckpt.head.label_token_ids]
        config["id2label"] = {str(i): label for i, label in enumerate(labels)}
        config["label2id"] = {label: i for i, label in enumerate(labels)}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def copy_tokenizer(ckpt: PrunedCheckpoint, directory: Path, *, include: bool = True) -> None:
    """Copy the checkpoint's tokenizer files, then load and round-trip them from ``directory``
    (``check_tokenizer``); ``include=False`` leaves them out, with a warning."""
    if not include:
        logger.warning("tokenizer left out (--no-tokenizer): the export takes token ids only")
        return
    if ckpt.tokenizer_dir is None:
        logger.warning("no tokenizer files in %s: the export has none", ckpt.source_path)
        return
    for name in TOKENIZER_FILES:
        src = Path(ckpt.tokenizer_dir) / name
        if src.is_file():
            shutil.copy2(src, directory / name)
    check_tokenizer(directory, vocab_size=ckpt.dims.vocab_size, source=Path(ckpt.tokenizer_dir))


def check_tokenizer(directory: Path, *, vocab_size: int, source: Path) -> None:
    """Load the tokenizer of ``directory`` as the runtime will, encode ``SAMPLE_TEXT``, decode
    and encode again: the ids must be inside the model's vocabulary and the same again (unless
    the sample holds words the vocabulary lacks: [UNK] does not decode back).
    CheckpointError naming the tokenizer file of ``source`` (use --no-tokenizer to leave it out)."""
    file = next((source / n for n in TOKENIZER_MODEL_FILES if (source / n).is_file()), source)
    hint = " (--no-tokenizer exports without it)"
    try:
        tokenizer = Tokenizer.from_dir(directory)
        ids = tokenizer.encode([SAMPLE_TEXT], max_length=64)["input_ids"][0]
        again = tokenizer.encode([tokenizer.decode(ids)], max_length=64)["input_ids"][0]
    except TokenizerError as exc:   # it names the copy in the temporary directory: name the source file
        broken = source / Path(exc.path).name if exc.path else file
        raise CheckpointError(f"tokenizer cannot be loaded: {exc.message}{hint}", path=broken,
                              field="tokenizer") from exc
    except Exception as exc:  # noqa: BLE001 -- tokenizers raises plain Exceptions on broken files
        raise CheckpointError(f"tokenizer fails on a sample text: {type(exc).__name__}: {exc}{hint}", path=file,
                              field="tokenizer") from exc
    if ids.size < 3 or int(ids.max()) >= vocab_size:
        raise CheckpointError(f"tokenizer gives ids {ids.tolist()} for {SAMPLE_TEXT!r}, outside the model's "
                              f"{vocab_size}-token vocabulary{hint}", path=file, field="tokenizer")
    unknown = tokenizer.token_id("[UNK]")
    lossy = unknown is not None and unknown in ids.tolist()   # words outside a (small) vocabulary
    if ids.tolist() != again.tolist() and not lossy:
        raise CheckpointError(f"tokenizer does not round-trip {SAMPLE_TEXT!r} ({ids.tolist()} -> "
                              f"{again.tolist()}){hint}", path=file, field="tokenizer")


def file_sizes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(directory.iterdir()) if p.is_file()}
