"""Attention over packed documents: peak memory of a training step at a long sequence with
document ids (`bar.model.attention`: one causal SDPA call per document) beside the boolean
[batch, 1, seq, seq] mask that packed rows used before, in one run.

    python benchmarks/attention_memory.py [--seq 4096] [--batch 2] [--documents 8]

Each variant runs in a fresh process (the default model's shape at `--seq` tokens, rows packed
with `--documents` documents each): forward, backward; its peak resident memory (VmHWM) above
the process's baseline after building the model. Both give the same loss.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def rss(field: str = "VmHWM") -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def worker(variant: str, seq: int, batch: int, documents: int) -> dict:
    import time

    import torch

    from bar import parallel
    from bar.model import build
    from benchmarks.common import model_spec

    arch = model_spec("default").model_copy(update={"seq_length": seq})
    parallel.init(1, 0)
    torch.manual_seed(0)
    model = build(arch, 1).train()
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, arch.vocab_size, (batch, seq + 1), generator=g)
    ids = torch.arange(seq).div(seq // documents, rounding_mode="floor").clamp(max=documents - 1) + 1
    ids = ids.expand(batch, seq)
    if variant == "mask":  # what Batches built before: [b, 1, s, s], True = masked
        same = ids[:, :, None] == ids[:, None, :]
        mask = ~(same & torch.ones(seq, seq, dtype=torch.bool).tril())[:, None]
    else:
        mask = ids
    base = rss("VmRSS")
    start = time.perf_counter()
    loss = model(tokens[:, :-1], None, mask, labels=tokens[:, 1:]).mean()
    loss.backward()
    return {"peak": rss() - base, "seconds": time.perf_counter() - start, "loss": loss.item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--documents", type=int, default=8)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args.seq, args.batch, args.documents)))
        return
    results = {}
    for variant in ("mask", "documents"):
        run = subprocess.run(
            [
                sys.executable,
                __file__,
                "--worker",
                variant,
                "--seq",
                str(args.seq),
                "--batch",
                str(args.batch),
                "--documents",
                str(args.documents),
            ],
            capture_output=True,
            text=True,
        )
        line = [x for x in run.stdout.splitlines() if x.startswith("RESULT ")]
        if not line:
            raise SystemExit(f"{variant} failed:\n{run.stderr[-3000:]}")
        results[variant] = json.loads(line[0].removeprefix("RESULT "))
    print(
        f"default model at seq {args.seq}, batch {args.batch}, {args.documents} documents per row; "
        f"one forward + backward, fresh process each"
    )
    for variant, r in results.items():
        print(
            f"  {variant:10s} peak {r['peak'] / 2**20:8.1f} MiB above baseline  {r['seconds']:6.2f} s  "
            f"loss {r['loss']:.6f}"
        )
    m, d = results["mask"], results["documents"]
    print(
        f"documents vs mask: {d['peak'] / m['peak']:.2f}x the peak memory, {m['seconds'] / d['seconds']:.2f}x "
        f"the speed; same loss: {abs(m['loss'] - d['loss']) < 1e-4}"
    )


if __name__ == "__main__":
    main()
