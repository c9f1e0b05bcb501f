"""runtime.session / tokenize / providers on a tiny ONNX model built here with onnx.helper."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer as FastTokenizer
from tokenizers import models, normalizers, pre_tokenizers, processors

from runtime.errors import CustomOpError, DeviceError, SessionError, TokenizerError
from runtime.manifest import Manifest, ValidationRecord
from runtime.providers import select_providers
from runtime.session import ModelSession, SessionConfig
from runtime.tokenize import Tokenizer

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "bad", "meh", "movie"]
ID2LABEL = {"0": "positive", "1": "negative", "2": "neutral"}
TABLE = np.zeros((len(VOCAB), 3), dtype=np.float32)
TABLE[4, 0] = TABLE[5, 1] = TABLE[6, 2] = 6.0             # good / bad / meh vote for their label
TYPE_TABLE = np.array([[0, 0, 0], [0, 0, 1]], dtype=np.float32)


def build_model(path: Path, *, token_types: bool = True, custom_domain: str | None = None) -> None:
    """last_hidden_state = E[input_ids] (+ T[token_type_ids]); logits = mean over the sequence."""
    ints = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
            for n in ("input_ids", "attention_mask", "token_type_ids")[:3 if token_types else 2]]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3]),
               helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT,
                                             ["batch", "seq", 3])]
    inits = [numpy_helper.from_array(TABLE, "E"), numpy_helper.from_array(TYPE_TABLE, "T")]
    nodes = [helper.make_node("Gather", ["E", "input_ids"], ["words"])]
    if token_types:
        nodes += [helper.make_node("Gather", ["T", "token_type_ids"], ["types"]),
                  helper.make_node("Add", ["words", "types"], ["hidden"])]
    else:
        nodes += [helper.make_node("Identity", ["words"], ["hidden"])]
    last = "hidden"
    if custom_domain:
        nodes.append(helper.make_node("SparseThing", ["hidden"], ["custom"], domain=custom_domain))
        last = "custom"
    nodes += [helper.make_node("Identity", [last], ["last_hidden_state"]),
              helper.make_node("ReduceMean", [last], ["logits"], axes=[1], keepdims=0)]
    opsets = [helper.make_opsetid("", 17)]
    if custom_domain:
        opsets.append(helper.make_opsetid(custom_domain, 1))
    graph = helper.make_graph(nodes, "tiny", ints, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 8
    onnx.save(model, str(path))


def fast_tokenizer() -> FastTokenizer:
    tok = FastTokenizer(models.WordPiece({t: i for i, t in enumerate(VOCAB)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return tok


def make_export(directory: Path, *, tokenizer: str = "json", **model_kwargs) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    build_model(directory / "model.onnx", **model_kwargs)
    (directory / "config.json").write_text(json.dumps({"id2label": ID2LABEL}))
    if tokenizer == "json":
        fast_tokenizer().save(str(directory / "tokenizer.json"))
    elif tokenizer == "vocab":
        (directory / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
        (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    return directory


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_export(tmp_path_factory.mktemp("export") / "tiny")


@pytest.fixture(scope="module")
def session(export: Path) -> ModelSession:
    return ModelSession.load(export, SessionConfig(intra_op_threads=1))


def test_session_basics(session: ModelSession) -> None:
    assert session.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert session.output_names == ["logits", "last_hidden_state"]
    assert session.providers == ["CPUExecutionProvider"]
    assert session.manifest is None and session.load_seconds > 0


def test_run_logits_predict(session: ModelSession) -> None:
    texts = ["good movie", "BAD", "meh meh movie good"]
    feeds = session.encode(texts)
    assert feeds["input_ids"].dtype == np.int64 and feeds["input_ids"].shape == (3, 6)
    out = session.run(feeds)
    expected = TABLE[feeds["input_ids"]].mean(axis=1)
    np.testing.assert_allclose(out["logits"], expected, rtol=1e-6)
    np.testing.assert_allclose(session.logits(texts), expected, rtol=1e-6)
    assert session.predict(texts) == ["positive", "negative", "neutral"]
    assert session.predict(texts, batch_size=2) == ["positive", "negative", "neutral"]


def test_embed_is_masked_mean_normalised(session: ModelSession) -> None:
    texts = ["good", "bad movie meh"]
    emb = session.embed(texts)
    feeds = session.encode(texts)
    mask = feeds["attention_mask"][..., None]
    mean = (TABLE[feeds["input_ids"]] * mask).sum(1) / mask.sum(1)
    np.testing.assert_allclose(emb, mean / np.linalg.norm(mean, axis=1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(session.embed(texts, normalize=False), mean, rtol=1e-6)
    assert emb.shape == (2, 3)


def test_sentence_pairs_use_token_types(session: ModelSession) -> None:
    feeds = session.encode([("good", "bad movie")])
    assert feeds["token_type_ids"].tolist() == [[0, 0, 0, 1, 1, 1]]
    hidden = session.run(feeds)["last_hidden_state"]
    assert hidden[0, 3:, 2].tolist() == [1.0, 1.0, 1.0]


def test_model_without_token_type_ids(tmp_path: Path) -> None:
    loaded = ModelSession.load(make_export(tmp_path / "e", token_types=False))
    assert loaded.input_names == ["input_ids", "attention_mask"]
    feeds = loaded.encode(["good"])
    assert "token_type_ids" in feeds
    assert loaded.run(feeds)["logits"].shape == (1, 3)
    with pytest.raises(SessionError, match="missing model input.*attention_mask"):
        loaded.run({"input_ids": feeds["input_ids"]})


def test_tokenizer_padding_truncation(export: Path) -> None:
    tok = Tokenizer.from_dir(export)
    fixed = tok.encode(["good", "bad movie"], pad_to=8)
    assert fixed["input_ids"].shape == (2, 8)
    assert fixed["attention_mask"].tolist()[0] == [1, 1, 1, 0, 0, 0, 0, 0]
    short = tok.encode(["good good good good good"], max_length=4)
    assert short["input_ids"].tolist() == [[2, 4, 4, 3]]
    with pytest.raises(ValueError, match="mix"):
        tok.encode(["a", ("b", "c")])


def test_vocab_txt_fallback_matches_tokenizer_json(tmp_path: Path, export: Path) -> None:
    from_vocab = Tokenizer.from_dir(make_export(tmp_path / "v", tokenizer="vocab"))
    from_json = Tokenizer.from_dir(export)
    texts = [("Good MOVIE", "bad"), ("meh", "unknownword")]
    for key, value in from_json.encode(texts).items():
        np.testing.assert_array_equal(from_vocab.encode(texts)[key], value)


def test_missing_tokenizer_names_directory(tmp_path: Path) -> None:
    directory = make_export(tmp_path / "notok", tokenizer="none")
    with pytest.raises(TokenizerError) as err:
        Tokenizer.from_dir(directory)
    assert str(directory) in str(err.value)
    loaded = ModelSession.load(directory)
    with pytest.raises(TokenizerError, match="no tokenizer"):
        loaded.predict(["good"])
    ids = np.array([[2, 4, 3]])
    assert loaded.run({"input_ids": ids, "attention_mask": np.ones_like(ids),
                       "token_type_ids": np.zeros_like(ids)})["logits"].shape == (1, 3)


def test_missing_directory_and_model(tmp_path: Path) -> None:
    with pytest.raises(SessionError, match="export directory not found") as err:
        ModelSession.load(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SessionError, match="model.onnx not found") as err:
        ModelSession.load(tmp_path / "empty")
    assert str(tmp_path / "empty" / "model.onnx") in str(err.value)


def test_manifest_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = make_export(tmp_path / "m")
    manifest = Manifest(source_format="dense", source_path="x", method="magnitude", weights="dense",
                        head={"kind": "sequence-classification"}, layers=[], totals={}, files={},
                        input_names=["input_ids", "attention_mask", "token_type_ids"],
                        output_names=["logits", "last_hidden_state"],
                        validation=ValidationRecord(passed=True), versions={})
    manifest.write(directory)
    assert ModelSession.load(directory).manifest == manifest
    manifest.custom_op_domains = ["ai.smp"]
    manifest.write(directory)
    # The project's own ai.smp library is registered automatically; without it, a clear error.
    monkeypatch.setenv("SMP_SPARSE_LIBRARY", str(tmp_path / "missing.so"))
    monkeypatch.setattr("runtime.kernels._candidates", lambda: [tmp_path / "missing.so"])
    with pytest.raises(CustomOpError, match="ai.smp"):
        ModelSession.load(directory)


def test_unknown_custom_domain_is_named(tmp_path: Path) -> None:
    directory = make_export(tmp_path / "c", custom_domain="ai.smp")
    with pytest.raises(CustomOpError, match="custom operator domain.*ai.smp"):
        ModelSession.load(directory)
    with pytest.raises(SessionError, match="custom-op library not found"):
        ModelSession.load(directory, SessionConfig(custom_op_libraries=(str(tmp_path / "x.so"),)))


def test_cuda_without_provider(monkeypatch: pytest.MonkeyPatch, export: Path) -> None:
    import onnxruntime

    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(DeviceError, match="onnxruntime-gpu.*never both"):
        select_providers("cuda")
    with pytest.raises(DeviceError, match="no CUDAExecutionProvider"):
        ModelSession.load(export, SessionConfig(device="cuda"))
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert select_providers("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_unknown_device_and_missing_onnxruntime(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DeviceError, match="--device"):
        select_providers("tpu")
    with pytest.raises(DeviceError, match="--device"):
        SessionConfig(device="gpu")
    assert select_providers("cpu") == ["CPUExecutionProvider"]
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(DeviceError, match="install the cpu extra"):
        select_providers("cuda")


def test_bad_session_config() -> None:
    with pytest.raises(SessionError, match="graph_optimization"):
        SessionConfig(graph_optimization="max")


def test_runtime_imports_no_training_stack() -> None:
    code = ("import sys, runtime.session, runtime.contract, runtime.tokenize, "
            "runtime.providers\n"
            "bad = [m for m in ('smp_export', 'smp_train', 'torch', 'transformers')\n"
            "       if m in sys.modules]\n"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


@pytest.mark.parametrize("spinning, entry", [(None, None), (True, "1"), (False, "0")])
def test_spinning_option_reaches_onnxruntime(spinning, entry):
    import onnxruntime as ort

    from runtime.session import _session_options

    opts = _session_options(ort, SessionConfig(spinning=spinning))
    key = "session.intra_op.allow_spinning"
    if entry is None:
        # Never set: onnxruntime's own default (spinning on) applies.
        with pytest.raises(RuntimeError, match=f"does not have configuration with key: {key}"):
            opts.get_session_config_entry(key)
    else:
        assert opts.get_session_config_entry(key) == entry
