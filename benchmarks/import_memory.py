"""Importing a user's model: peak memory and time of a ~2 GB transformers Llama (bf16) brought
into bar's Megatron-Core model, streamed tensor by tensor (`bar.model.hf.hf_tensors` over
`read_hf`, what pretrain_base and train_anchor run) against every tensor read and converted
first, side by side in one run.

    python benchmarks/import_memory.py [--layers 18] [--keep DIR]

The model is written once (random bf16 tensors under transformers' names, 1 GB shards, its
config.json saved by transformers) into a temporary folder. Each import runs in a process of its
own; memory is the peak resident memory (VmHWM) above the process's resident memory once
torch and Megatron-Core are imported, against the size of the model's weights.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPE = dict(hidden=2048, heads=16, kv_heads=8, ffn=5632, vocab=32000)


def rss(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def write_model(folder: Path, layers: int) -> int:
    """A random bf16 Llama as transformers saves one; returns the bytes of its weights."""
    import torch
    from transformers import LlamaConfig

    from bar.model.hf import save_weights

    h, f, v = SHAPE["hidden"], SHAPE["ffn"], SHAPE["vocab"]
    kv = SHAPE["kv_heads"] * h // SHAPE["heads"]
    shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,), "lm_head.weight": (v, h)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {
            p + "self_attn.q_proj.weight": (h, h),
            p + "self_attn.k_proj.weight": (kv, h),
            p + "self_attn.v_proj.weight": (kv, h),
            p + "self_attn.o_proj.weight": (h, h),
            p + "mlp.gate_proj.weight": (f, h),
            p + "mlp.up_proj.weight": (f, h),
            p + "mlp.down_proj.weight": (h, f),
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
        }
    g = torch.Generator().manual_seed(0)
    state = {n: (torch.randn(s, generator=g) * 0.02).bfloat16() for n, s in shapes.items()}
    save_weights(state, folder, max_shard_size="1GB")
    LlamaConfig(
        vocab_size=v,
        hidden_size=h,
        intermediate_size=f,
        num_hidden_layers=layers,
        num_attention_heads=SHAPE["heads"],
        num_key_value_heads=SHAPE["kv_heads"],
        dtype="bfloat16",
    ).save_pretrained(folder)
    return sum(t.numel() * 2 for t in state.values())


def worker(folder: Path, layers: int, streamed: bool) -> None:
    import torch  # noqa: F401

    from bar import parallel
    from bar.model import build, init_added_tokens, with_added_tokens
    from bar.model.hf import from_hf, hf_tensors, read_hf
    from bar.specs import ModelSpec
    from bar.train.checkpoint import load_state

    arch = ModelSpec(
        num_layers=layers,
        hidden_size=SHAPE["hidden"],
        num_attention_heads=SHAPE["heads"],
        num_query_groups=SHAPE["kv_heads"],
        ffn_hidden_size=SHAPE["ffn"],
        vocab_size=-(-(SHAPE["vocab"] + 6) // 64) * 64,  # bar's 6 special tokens added, as base_architecture rounds
        seq_length=4096,
        precision="bf16",
    )
    added = list(range(SHAPE["vocab"], SHAPE["vocab"] + 6))
    parallel.init(1, 0)
    base = rss("VmRSS")
    start = time.perf_counter()
    if streamed:  # what bar.runner.run_import_worker runs
        model = build(arch, 1, initialize=False)
        load_state(model, with_added_tokens(hf_tensors(read_hf(folder), arch), added, SHAPE["vocab"] + 6))
    else:  # every tensor read, converted, then loaded into an initialised model
        model = build(arch, 1)
        load_state(model, init_added_tokens(from_hf(dict(read_hf(folder)), arch), added, SHAPE["vocab"] + 6))
    seconds = time.perf_counter() - start
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    print("RESULT " + json.dumps({"peak": rss("VmHWM") - base, "seconds": seconds, "model": weights}), flush=True)
    parallel.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=18)
    parser.add_argument("--keep", type=Path, help="write the model here (and keep it) instead of a temporary folder")
    parser.add_argument("--worker", choices=["streamed", "eager"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.folder, args.layers, args.worker == "streamed")
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp) / "llama"
        folder.mkdir(parents=True, exist_ok=True)
        size = write_model(folder, args.layers)
        print(f"importing a bf16 Llama of {size / 1e9:.2f} GB ({args.layers} layers, hidden {SHAPE['hidden']})")
        print(f"{'import':9s} {'seconds':>8s} {'peak memory':>12s} {'/ model':>8s}")
        for how in ("streamed", "eager"):
            cmd = [sys.executable, __file__, "--worker", how, "--folder", str(folder), "--layers", str(args.layers)]
            run = subprocess.run(cmd, capture_output=True, text=True)
            line = [x for x in run.stdout.splitlines() if x.startswith("RESULT ")]
            if not line:
                raise SystemExit(f"{how} failed:\n{run.stderr[-3000:]}")
            r = json.loads(line[0].removeprefix("RESULT "))
            print(f"{how:9s} {r['seconds']:8.1f} {r['peak'] / 1e9:9.2f} GB {r['peak'] / r['model']:7.2f}x")


if __name__ == "__main__":
    main()
