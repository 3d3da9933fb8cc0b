"""`bar plan` against measured memory: an expert's SFT step at the tiny and default presets, in
bf16 and fp32, each in a fresh process, beside the plan's estimate for it, in one run.

    python benchmarks/plan_memory.py [--presets tiny default]

Measured: peak resident memory (VmHWM) above the process's resident memory just before the
model is built (torch, Megatron-Core and the interpreter are the baseline), over two steps of
bar's training loop body (forward with packed-document ids, fp32 loss, backward, the optimizer
with its fp32 main weights). Estimated: `bar.plan.memory` for the same model, trainable groups
and batch.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SFT = ["domain_ffn", "router", "embeddings", "lm_head"]


def rss(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def worker(preset: str, precision: str) -> dict:
    import torch

    from bar import parallel, plan
    from bar.model import build
    from bar.model.moe import set_trainable
    from bar.specs import OptimSpec
    from bar.train import optimizer
    from benchmarks.common import model_spec

    arch = model_spec(preset).model_copy(update={"precision": precision})
    batch = {"tiny": 8, "default": 16}[preset]
    parallel.init(1, 0)
    counts = plan.count(arch, 2, SFT)
    estimate = plan.memory(arch, counts, batch * arch.seq_length, 2)
    g = torch.Generator().manual_seed(0)
    data = [torch.randint(0, arch.vocab_size, (batch, arch.seq_length + 1), generator=g) for _ in range(2)]
    documents = torch.ones(batch, arch.seq_length, dtype=torch.long)
    base = rss("VmRSS")
    torch.manual_seed(0)
    model = build(arch, 1, num_experts=2).train()
    set_trainable(model, SFT)
    opt = optimizer(model, OptimSpec(lr=1e-4))
    for x in data:
        loss = model(x[:, :-1], None, documents, labels=x[:, 1:]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step(1.0)
    return {"measured": rss("VmHWM") - base, "estimate": estimate}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "default"])
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(*args.worker)))
        return
    print("expert SFT step (2-slot MoE), peak memory above the process baseline vs bar plan's estimate")
    print(f"{'preset':8s} {'precision':9s} {'measured':>10s} {'estimate':>10s} {'error':>7s}   estimate by part")
    for preset in args.presets:
        for precision in ("bf16", "fp32"):
            run = subprocess.run(
                [sys.executable, __file__, "--worker", preset, precision], capture_output=True, text=True
            )
            line = [x for x in run.stdout.splitlines() if x.startswith("RESULT ")]
            if not line:
                raise SystemExit(f"{preset} {precision} failed:\n{run.stderr[-3000:]}")
            r = json.loads(line[0].removeprefix("RESULT "))
            est, measured = r["estimate"], r["measured"]
            parts = ", ".join(f"{k} {v / 2**20:.1f}" for k, v in est.items() if k != "total")
            print(
                f"{preset:8s} {precision:9s} {measured / 2**20:8.1f}Mi {est['total'] / 2**20:8.1f}Mi "
                f"{est['total'] / measured - 1:+6.0%}   {parts} (MiB)"
            )


if __name__ == "__main__":
    main()
