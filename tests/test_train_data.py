"""Data and configuration errors are clear: missing columns, empty data, unknown labels, heads."""

from __future__ import annotations

import pytest

from smp_bench.errors import DataError
from smp_train.build import build_model
from smp_train.config import DataConfig, HeadConfig, PruningConfig
from smp_train.data import label_ids, load_splits
from smp_train.errors import HeadError, ResumeError, TrainConfigError, TrainDataError
from smp_train.trainer import run_training
from tests.test_train_fixtures import tiny_config, write_tiny_base, write_tiny_csv


def test_missing_column_names_file_and_column(tmp_path):
    csv = write_tiny_csv(tmp_path / "d.csv")
    with pytest.raises(DataError, match="column 'sentence' not found") as info:
        load_splits(DataConfig(source="table", train_file=csv, text_column="sentence"))
    assert info.value.path == str(csv)


def test_empty_file_and_header_only(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        load_splits(DataConfig(source="table", train_file=empty))
    header = tmp_path / "header.csv"
    header.write_text("text,label\n")
    with pytest.raises(DataError, match="no rows"):
        load_splits(DataConfig(source="table", train_file=header))


def test_unknown_label_in_eval_file(tmp_path):
    train = write_tiny_csv(tmp_path / "train.csv")
    held = write_tiny_csv(tmp_path / "eval.csv", rows=8, labels=("neg", "neutral"))
    splits = load_splits(DataConfig(source="table", train_file=train, eval_file=held))
    with pytest.raises(TrainDataError, match="'neutral'.*not one the head knows: neg, pos") as info:
        label_ids(splits.eval, splits.classes)
    assert info.value.path == str(held)


def test_glue_pairs_and_jsonl(tmp_path):
    glue = tmp_path / "dev.tsv"
    glue.write_text("index\tsentence1\tsentence2\tlabel\n" +
                    "".join(f"{i}\tgood yes\tbad no\t{i % 2}\n" for i in range(10)))
    splits = load_splits(DataConfig(source="glue", train_file=glue))
    assert splits.train.is_pairs and splits.classes == ("0", "1")
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("".join(f'{{"text": "good {i}", "label": "l{i % 3}"}}\n' for i in range(9)))
    assert load_splits(DataConfig(source="table", train_file=jsonl)).classes == ("l0", "l1", "l2")


def test_head_errors(tmp_path):
    base = write_tiny_base(tmp_path / "base")
    csv = write_tiny_csv(tmp_path / "d.csv")
    config = tiny_config(tmp_path, base, csv, head="label-words")
    with pytest.raises(HeadError, match="needs an MLM head"):
        build_model(config, ("neg", "pos"))
    config = tiny_config(tmp_path, base, csv, label_words=("bad",))
    with pytest.raises(HeadError, match="1 label words for 2 classes"):
        build_model(config, ("neg", "pos"))
    mlm = write_tiny_base(tmp_path / "mlm", head="smp-label-words")
    config = tiny_config(tmp_path, mlm, csv, label_words=("bad", "goodness"))
    with pytest.raises(HeadError, match="exactly one known token"):
        build_model(config, ("neg", "pos"))


def test_config_errors_and_output_dir(tmp_path):
    with pytest.raises(TrainConfigError, match="keep"):
        PruningConfig(keep=0.0)
    with pytest.raises(TrainConfigError, match="method"):
        PruningConfig(method="random")
    with pytest.raises(TrainConfigError, match="label"):
        HeadConfig(template="no placeholder")
    with pytest.raises(TrainConfigError, match="train file"):
        DataConfig(source="table")
    base = write_tiny_base(tmp_path / "base")
    csv = write_tiny_csv(tmp_path / "d.csv")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "something").write_text("x")
    with pytest.raises(ResumeError, match="--resume .* or --overwrite"):
        run_training(tiny_config(tmp_path, base, csv))
    with pytest.raises(ResumeError, match="nothing to resume"):
        run_training(tiny_config(tmp_path, base, csv, resume=True))
