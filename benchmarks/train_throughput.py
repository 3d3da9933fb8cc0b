"""Training throughput: our Megatron-Core path beside a plain `transformers` model of the same
shape trained with a plain PyTorch loop, and beside the machine's matmul peak, in one run; then
an expert's training step and its rollouts in bf16 beside float32.

    python benchmarks/train_throughput.py [--preset default] [--steps 10] [--batch-size 16]
    python benchmarks/train_throughput.py --precision-only     # only the bf16 vs fp32 part

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


def matmul_peak(n: int = 2048, repeats: int = 10, dtype=None) -> float:
    import torch

    from bar import parallel

    a, b = (torch.randn(n, n, dtype=dtype, device=parallel.device()) for _ in range(2))
    torch.matmul(a, b)
    best = min(seconds(lambda: torch.matmul(a, b)) for _ in range(repeats))
    return 2 * n**3 / best


def batches(arch, batch_size: int, steps: int):
    import torch

    from bar import parallel

    g = torch.Generator().manual_seed(0)
    return [
        torch.randint(0, arch.vocab_size, (batch_size, arch.seq_length + 1), generator=g).to(parallel.device())
        for _ in range(steps)
    ]


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


def expert_step_time(arch, data) -> float:
    """Seconds per SFT step of a 2-slot expert (bar's optimizer, the SFT phase's trainable
    groups, gradient clipping), in `arch.precision`."""
    import torch

    from bar import parallel
    from bar.model import build
    from bar.model.moe import set_trainable
    from bar.specs import OptimSpec
    from bar.train import optimizer

    parallel.init(1, 0)
    torch.manual_seed(0)
    model = build(arch, 1, num_experts=2).train()
    set_trainable(model, ["domain_ffn", "router", "embeddings", "lm_head"])
    opt = optimizer(model, OptimSpec(lr=1e-4))

    def step(x):
        loss = model(x[:, :-1], None, None, labels=x[:, 1:]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step(1.0)

    try:
        return time_steps(step, data)
    finally:
        parallel.shutdown()


def rollout_time(arch, prompts, new_tokens: int) -> tuple[float, list]:
    """Seconds of one RLVR step's rollouts (greedy, no stop token) of a 2-slot expert in
    `arch.precision`, and the tokens."""
    import torch

    from bar import parallel
    from bar.decode import generate
    from bar.model import build

    parallel.init(1, 0)
    torch.manual_seed(0)
    model = build(arch, 1, num_experts=2).eval()

    def run():
        return generate(model, prompts, max_new_tokens=new_tokens, stop_ids=set(), vocab_size=arch.vocab_size, pad_id=0)

    try:
        out = run()
        return min(seconds(run) for _ in range(2)), out
    finally:
        parallel.shutdown()


def precision(preset: str, steps: int, batch_size: int) -> None:
    """An expert's SFT step and its rollouts in bf16 beside fp32, at the preset's size and at
    hidden 512, with MFU against the bf16 matmul peak measured here."""
    import torch

    from bar.cost import training_flops

    base = model_spec(preset)
    wide = base.model_copy(
        update=dict(hidden_size=512, ffn_hidden_size=1360, num_attention_heads=8, num_query_groups=4)
    )
    peak = {"fp32": matmul_peak(), "bf16": matmul_peak(dtype=torch.bfloat16)}
    where = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"matmul peak (2048^3, {where}): fp32 {peak['fp32'] / 1e9:.0f} GFLOP/s, bf16 {peak['bf16'] / 1e9:.0f} "
        f"GFLOP/s ({peak['bf16'] / peak['fp32']:.1f}x)"
    )
    print(
        "expert SFT step (2-slot MoE; domain FFN, router, embeddings, LM head train), "
        f"batch {batch_size} x {base.seq_length}, median of {steps} steps:"
    )
    sft = {"sft": ["domain_ffn", "router", "embeddings", "lm_head"]}
    for label, arch in ((f"{preset} (hidden {base.hidden_size})", base), ("hidden 512", wide)):
        data = batches(arch, batch_size, steps + 2)
        tokens = batch_size * arch.seq_length
        flops = training_flops(arch, {"sft": tokens}, 2, sft)
        times = {p: expert_step_time(arch.model_copy(update={"precision": p}), data) for p in ("fp32", "bf16")}
        for p, t in times.items():
            print(
                f"  {label:22s} {p}: {t:6.3f} s/step {tokens / t:8.0f} tok/s  {flops / t / 1e9:6.1f} GFLOP/s = "
                f"{flops / t / peak[p]:5.1%} of the {p} peak, {flops / t / peak['bf16']:5.1%} of the bf16 peak"
            )
        print(f"  {label:22s} bf16 vs fp32: {times['fp32'] / times['bf16']:.2f}x the tokens/s")
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(1, base.vocab_size, (64, 32), generator=g).tolist()
    roll = {p: rollout_time(base.model_copy(update={"precision": p}), prompts, 48) for p in ("fp32", "bf16")}
    lengths = {p: [len(r) for r in out] for p, (_, out) in roll.items()}
    same = sum(a == b for a, b in zip(roll["fp32"][1], roll["bf16"][1]))
    print(
        f"rollouts (64 x 48 new tokens after 32, greedy, {preset}): fp32 {roll['fp32'][0]:.2f} s, "
        f"bf16 {roll['bf16'][0]:.2f} s ({roll['fp32'][0] / roll['bf16'][0]:.2f}x); identical lengths: "
        f"{lengths['fp32'] == lengths['bf16']}; identical tokens in {same} of 64 rows"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default", help="model size: specs/presets/<preset>.yaml")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after 2 warm-up steps)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--precision-only", action="store_true", help="only the bf16 vs fp32 comparison")
    parser.add_argument(
        "--peak-only",
        action="store_true",
        help="only the fp32 and bf16 matmul peaks (1024^3) and the precision `auto` picks on this device",
    )
    parser.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)  # tp_size, under torchrun
    args = parser.parse_args()
    if args.peak_only:
        import torch

        from bar import parallel
        from bar.specs.device import bf16_native

        fp32, bf16 = (matmul_peak(1024, 3, dtype) for dtype in (torch.float32, torch.bfloat16))
        print(
            f"matmul peak (1024^3, {parallel.device().type}, {torch.get_num_threads()} threads): fp32 "
            f"{fp32 / 1e9:.1f} GFLOP/s, bf16 {bf16 / 1e9:.1f} GFLOP/s ({bf16 / fp32:.2f}x); bf16 units: "
            f"{bf16_native()}, so precision auto = {'bf16' if bf16_native() else 'fp32'}"
        )
        return
    if args.precision_only:
        precision(args.preset, args.steps, args.batch_size)
        return

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
    launched = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            __file__,
            "--preset",
            args.preset,
            "--steps",
            str(args.steps),
            "--batch-size",
            str(args.batch_size),
            "--worker",
            "2",
        ],
        capture_output=True,
        text=True,
    )
    result = [line for line in launched.stdout.splitlines() if line.startswith("RESULT ")]
    if not result:
        raise SystemExit(f"TP=2 run failed:\n{launched.stderr[-3000:]}")
    tp2 = json.loads(result[0].removeprefix("RESULT "))["seconds"]

    print(
        f"preset {args.preset}: {arch.num_layers} layers, hidden {arch.hidden_size}, seq {arch.seq_length}, "
        f"batch {args.batch_size} ({tokens} tokens/step, {flops / 1e9:.1f} GFLOP/step); "
        f"{os.cpu_count()} cores, median of {args.steps} steps"
    )
    print(f"matmul peak (2048^3 float32):       {peak / 1e9:8.1f} GFLOP/s")
    rows = [("bar (Megatron-Core, TP=1)", ours), ("transformers + plain loop", hf), ("bar (Megatron-Core, TP=2)", tp2)]
    for name, step in rows:
        print(
            f"{name:34s} {step:6.3f} s/step  {tokens / step:8.0f} tok/s  "
            f"{flops / step / 1e9:6.1f} GFLOP/s = {flops / step / peak:5.1%} of peak"
        )
    print(f"bar TP=1 vs transformers: {hf / ours:.2f}x the speed; TP=2 vs TP=1: {ours / tp2:.2f}x")
    print()
    precision(args.preset, args.steps, args.batch_size)


if __name__ == "__main__":
    main()
