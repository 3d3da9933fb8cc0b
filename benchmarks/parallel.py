"""Tensor and data parallelism on this machine: a training step of a preset's model at tp 1,
tp 2 and dp 2 (through torchrun, gloo), and at tp 1 with activation recomputation, side by side
in one run: tokens/s against tp 1 and each rank's peak memory.

    python benchmarks/parallel.py [--preset default] [--steps 12] [--precision fp32] [--expert]

The model is the dense one, or with `--expert` an expert's 2-slot MoE training what its SFT
phase trains (its FFN, router, embeddings and LM head; sequence-parallel at tp 2).

Each layout trains the same global batch with bar's loop (`bar.train.train`) for `--steps`
steps; the first two are warm-up and not timed. Memory: peak resident memory (VmHWM) of each
rank above its resident memory before the model was built. The processes share the machine's
cores (`bar.launch.threads_per_rank`), so on a 2-core machine tp 2 and dp 2 run one thread per
rank where tp 1 runs two.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LAYOUTS = [("tp 1", 1, 1, False), ("tp 2", 2, 1, False), ("dp 2", 1, 2, False), ("tp 1 + recompute", 1, 1, True)]
SFT = ["domain_ffn", "router", "embeddings", "lm_head"]
BATCH = 16


def rss(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def worker(preset: str, precision: str, tp: int, dp: int, recompute: bool, expert: bool, steps: int) -> None:
    import tempfile

    import torch
    import torch.distributed as dist

    from bar import parallel
    from bar.model import build
    from bar.model.moe import set_trainable
    from bar.specs import OptimSpec, TrainSpec
    from bar.train import train
    from bar.train.batches import Batches
    from bar.train.checkpoint import Resumable
    from benchmarks.common import model_spec

    arch = model_spec(preset).model_copy(update={"precision": precision, "recompute": recompute})
    parallel.init(tp, 0, dp)
    g = torch.Generator().manual_seed(0)
    items = [(torch.randint(1, arch.vocab_size, (arch.seq_length,), generator=g).tolist(), [True] * arch.seq_length)]
    items = items * (BATCH * steps)
    batches = Batches(items, batch_size=BATCH, seq_length=arch.seq_length, pad_id=0, seed=0)
    base = rss("VmRSS")
    model = build(arch, tp, num_experts=2 if expert else None)
    if expert:
        set_trainable(model, SFT)
    stamps = []
    model.register_forward_pre_hook(lambda module, args: stamps.append(time.perf_counter()))
    spec = TrainSpec(
        steps=steps, batch_size=BATCH, tp_size=tp, dp_size=dp, optim=OptimSpec(lr=1e-4), checkpoint_every=10**6
    )
    with tempfile.TemporaryDirectory() as tmp:
        train(model, batches, spec, Resumable(Path(tmp), "bench"), "bench")
    end = time.perf_counter()
    peaks = [None] * dist.get_world_size()
    dist.all_gather_object(peaks, rss("VmHWM") - base)
    if parallel.rank() == 0:
        seconds = end - stamps[2]  # from the third step's forward (one forward per step)
        tokens = BATCH * arch.seq_length * (steps - 2)
        print("RESULT " + json.dumps({"tokens_per_s": tokens / seconds, "peaks": peaks}), flush=True)
    parallel.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--expert", action="store_true", help="an expert's 2-slot MoE (its SFT groups train)")
    parser.add_argument("--worker", nargs=3, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        tp, dp, recompute = args.worker
        worker(args.preset, args.precision, tp, dp, bool(recompute), args.expert, args.steps)
        return
    from bar.launch import threads_per_rank

    what = "expert (2-slot MoE, SFT groups)" if args.expert else "dense"
    print(f"{what} training step, preset {args.preset}, {args.precision}, batch {BATCH}, {args.steps - 2} timed steps")
    print(f"{'layout':17s} {'ranks':>5s} {'threads/rank':>12s} {'tokens/s':>9s} {'vs tp 1':>8s}   peak memory per rank")
    first = None
    for name, tp, dp, recompute in LAYOUTS:
        nproc = tp * dp
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", __file__]
        cmd += ["--preset", args.preset, "--precision", args.precision, "--steps", str(args.steps)]
        cmd += ["--worker", str(tp), str(dp), str(int(recompute))] + (["--expert"] if args.expert else [])
        env = {**__import__("os").environ, "OMP_NUM_THREADS": str(threads_per_rank(nproc))}
        run = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = [x for x in run.stdout.splitlines() if x.startswith("RESULT ")]
        if not line:
            raise SystemExit(f"{name} failed:\n{run.stderr[-3000:]}")
        r = json.loads(line[0].removeprefix("RESULT "))
        first = first or r["tokens_per_s"]
        peaks = ", ".join(f"{p / 2**20:.0f} MiB" for p in r["peaks"])
        print(
            f"{name:17s} {nproc:5d} {threads_per_rank(nproc):12d} {r['tokens_per_s']:9.0f} "
            f"{r['tokens_per_s'] / first:7.2f}x   {peaks}"
        )


if __name__ == "__main__":
    main()
