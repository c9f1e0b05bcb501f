"""SmpModel: frozen weights stay unchanged, only scores train, heads compute what export does."""

from __future__ import annotations

import torch

from smp_export.checkpoint import HeadSpec, PrunedCheckpoint
from smp_export.reference import build_reference_model
from smp_train.build import build_model
from smp_train.data import PadCollator, load_splits, tokenize
from smp_train.masking import masks_for
from tests.test_train_fixtures import tiny_config, write_tiny_base, write_tiny_csv


def _batch(config, model_tok, splits, n=8):
    ds = tokenize(splits.train, splits.classes, model_tok, config.data.max_seq_len)
    return PadCollator()([ds[i] for i in range(n)])


def test_only_scores_change_and_masks_follow_the_rules(tmp_path):
    base = write_tiny_base(tmp_path / "base")
    config = tiny_config(tmp_path, base, write_tiny_csv(tmp_path / "d.csv"), keep=0.3)
    splits = load_splits(config.data)
    model, tok, _ = build_model(config, splits.classes)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.endswith("mask_scores") for n in trainable)
    frozen = {n: t.clone() for n, t in model.state_dict().items() if n not in trainable}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.05)
    batch = _batch(config, tok, splits)
    labels = batch.pop("labels")
    model.train()
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(**batch, keep=0.5)["logits"], labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    state = model.state_dict()
    assert all(torch.equal(state[n], t) for n, t in frozen.items())
    assert any(not torch.equal(state[n], torch.zeros_like(state[n])) for n in trainable)
    want = masks_for("smp-s", {n: s.detach() for n, s in model.scores().items()}, 0.5)
    got = model.masks(0.5)
    assert all(torch.equal(got[n], want[n]) for n in want)


def test_forward_equals_masked_reference_with_prototype_head(tmp_path):
    base = write_tiny_base(tmp_path / "base")
    config = tiny_config(tmp_path, base, write_tiny_csv(tmp_path / "d.csv"))
    splits = load_splits(config.data)
    model, tok, info = build_model(config, splits.classes)
    with torch.no_grad():
        for s in model.scores().values():
            s.normal_()
    model.eval()
    batch = _batch(config, tok, splits)
    batch.pop("labels")
    batch["attention_mask"][1, 4:] = 0          # a padded row
    masks = model.masks(0.3)
    state = model.canonical_state()
    weights = {n: t for n, t in state.items() if not n.endswith("mask_scores")}
    ckpt = PrunedCheckpoint(config=model.config, weights=weights, masks=masks, source_format="test",
                            method="smp-s", source_path=tmp_path, head=HeadSpec(kind="prototype",
                                                                                label_words=info.classes))
    ckpt.config.num_labels = len(info.classes)
    reference = build_reference_model(ckpt)
    with torch.no_grad():
        got = model(**batch, keep=0.3)["logits"]
        want = reference(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_magnitude_score_init_gives_magnitude_masks(tmp_path):
    from smp_export.masks import magnitude_mask
    from smp_train.config import PruningConfig

    base = write_tiny_base(tmp_path / "base")
    config = tiny_config(tmp_path, base, write_tiny_csv(tmp_path / "d.csv"),
                         pruning=PruningConfig(method="smp-l", keep=0.2, score_init_mode="magnitude"))
    model, _, _ = build_model(config, ("neg", "pos"))
    masks = model.masks(0.2)
    for name, mod in model.masked_linears().items():
        assert torch.equal(masks[name], magnitude_mask(mod.weight, 0.2))
