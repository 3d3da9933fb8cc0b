"""Training throughput: our Megatron-Core path beside a plain `transformers` model of the same
shape trained with a plain PyTorch loop, and beside the machine's matmul peak, in one run.

    python benchmarks/train_throughput.py [--preset default] [--steps 10] [--batch-size 16]

Both models train on the same random token batches (full causal sequences of seq_length,
AdamW, float32, the threads torch uses by default); a step is forward + backward + optimizer
step, timed after 2 warm-up steps. Achieved FLOP/s uses the analytic count of `bar.cost`
(3 forward passes per token). The peak is the best FLOP/s of a 2048^3 float32 `torch.matmul`
measured in the same process. TP=2 runs the Megatron path under `torchrun` with 2 processes
on the same cores and is reported beside TP=1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import llama, model_spec, seconds  # noqa: E402


def matmul_peak(n: int = 2048, repeats: int = 10) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.matmul(a, b)
    best = min(seconds(lambda: torch.matmul(a, b)) for _ in range(repeats))
    return 2 * n ** 3 / best


def batches(arch, batch_size: int, steps: int):
    import torch

    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, arch.vocab_size, (batch_size, arch.seq_length + 1), generator=g)
            for _ in range(steps)]


def time_steps(step, data, warmup: int = 2) -> float:
    """Seconds per step (median over the timed steps)."""
    import statistics

    for x in data[:warmup]:
        step(x)
    return statistics.median(seconds(lambda x=x: step(x)) for x in data[warmup:])


def megatron_step_time(arch, tp_size: int, data) -> float:
    import torch

    from bar import parallel
    from bar.model import build

    parallel.init(tp_size, 0)
    model = build(arch, tp_size).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(x):
        loss = model(x[:, :-1], None, None, labels=x[:, 1:]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    try:
        return time_steps(step, data)
    finally:
        parallel.shutdown()


def hf_step_time(arch, data) -> float:
    import torch

    model = llama(arch).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(x):
        logits = model(x[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return time_steps(step, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", help="model size: specs/presets/<preset>.yaml")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after 2 warm-up steps)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)  # tp_size, under torchrun
    args = parser.parse_args()

    arch = model_spec(args.preset)
    data = batches(arch, args.batch_size, args.steps + 2)
    if args.worker:  # a torchrun rank: time, and rank 0 reports
        step = megatron_step_time(arch, args.worker, data)
        if int(os.environ.get("RANK", "0")) == 0:
            print("RESULT " + json.dumps({"seconds": step}))
        return

    from bar.cost import training_flops

    tokens = args.batch_size * arch.seq_length
    flops = training_flops(arch, {"train": tokens})
    peak = matmul_peak()
    ours = megatron_step_time(arch, 1, data)
    hf = hf_step_time(arch, data)
    launched = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
                               __file__, "--preset", args.preset, "--steps", str(args.steps), "--batch-size",
                               str(args.batch_size), "--worker", "2"], capture_output=True, text=True)
    result = [line for line in launched.stdout.splitlines() if line.startswith("RESULT ")]
    if not result:
        raise SystemExit(f"TP=2 run failed:\n{launched.stderr[-3000:]}")
    tp2 = json.loads(result[0].removeprefix("RESULT "))["seconds"]

    print(f"preset {args.preset}: {arch.num_layers} layers, hidden {arch.hidden_size}, seq {arch.seq_length}, "
          f"batch {args.batch_size} ({tokens} tokens/step, {flops / 1e9:.1f} GFLOP/step); "
          f"{os.cpu_count()} cores, median of {args.steps} steps")
    print(f"matmul peak (2048^3 float32):       {peak / 1e9:8.1f} GFLOP/s")
    rows = [("bar (Megatron-Core, TP=1)", ours), ("transformers + plain loop", hf), ("bar (Megatron-Core, TP=2)", tp2)]
    for name, step in rows:
        print(f"{name:34s} {step:6.3f} s/step  {tokens / step:8.0f} tok/s  "
              f"{flops / step / 1e9:6.1f} GFLOP/s = {flops / step / peak:5.1%} of peak")
    print(f"bar TP=1 vs transformers: {hf / ours:.2f}x the speed; TP=2 vs TP=1: {ours / tp2:.2f}x")




if __name__ == "__main__":
    main()
