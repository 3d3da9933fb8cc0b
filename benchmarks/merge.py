"""Merge benchmark: the streaming merge (bar.merge) beside a naive load-everything merge.

    python benchmarks/merge.py                      # 4 synthetic experts of the default model size
    python benchmarks/merge.py --experts outputs/train_expert/{math,code,tool_use,safety}

Each merge runs in its own fresh process; peak memory is that process's highest resident set
(VmRSS: allocated tensors and the touched pages of memory-mapped safetensors files) while
merging, sampled every 0.5 ms, above what it held just before (after imports). The naive merge
reads every expert whole into memory (`safetensors.torch.load` of the file's bytes), then
merges. Also prints the disk read throughput of the same files measured in the same run, and
checks both merges give identical tensors.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def naive_merge(experts: dict[str, Path]) -> dict:
    """Load every expert whole, then merge in memory (what a first version would do)."""
    import torch
    from safetensors.torch import load

    from bar.model.moe import _EXPERT, _ROUTER, ANCHOR_SLOT, expert_name, router_name

    names = list(experts)
    states = {n: load((experts[n] / "model.safetensors").read_bytes()) for n in names}
    out = {}
    for key in states[names[0]]:
        m, r = _EXPERT.match(key), _ROUTER.match(key)
        if m:
            layer, slot, linear = int(m.group(1)), int(m.group(2)), m.group(3)
            if slot == ANCHOR_SLOT:
                out[key] = states[names[0]][key]
            else:
                for i, n in enumerate(names, start=1):
                    out[expert_name(layer, i, linear)] = states[n][key]
        elif r:
            rows = [states[n][key] for n in names]
            anchor_row = sum(row[ANCHOR_SLOT] / len(names) for row in rows)
            out[router_name(int(r.group(1)))] = torch.stack([anchor_row] + [row[1] for row in rows])
        else:
            out[key] = (sum(states[n][key].double() for n in names) / len(names)).float()
    return out


def one(kind: str, experts: list[Path], dest: Path) -> None:
    """Child process: run one merge, save it, print {seconds, peak_mib} as JSON."""
    import threading

    import torch  # noqa: F401  (imports happen before the baseline is taken)
    from safetensors.torch import save_file

    from bar.merge import merge

    def rss() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))

    named = {p.name: p for p in experts}
    base = peak = rss()
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, rss())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = time.perf_counter()
    state = merge(named) if kind == "streaming" else naive_merge(named)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    save_file({k: v.contiguous() for k, v in state.items()}, dest)
    output = sum(v.numel() * v.element_size() for v in state.values())
    print(json.dumps({"seconds": seconds, "peak_mib": (peak - base) / (1 << 20), "output_mib": output / (1 << 20)}))


def synthetic_experts(root: Path, n: int) -> list[Path]:
    """n 2-slot experts of the repository's model size (the default preset), from one random anchor."""
    import torch
    from safetensors.torch import save_file

    from bar import parallel
    from bar.model import build
    from bar.model.moe import _EXPERT, upcycle
    from bar.specs import Specs
    from bar.train.checkpoint import full_state

    arch = Specs(ROOT).model
    parallel.init(1, 0)
    anchor = full_state(build(arch, 1))
    parallel.shutdown()
    paths = []
    for i in range(n):
        g = torch.Generator().manual_seed(i)
        state = upcycle(anchor, anchor, arch.num_layers)
        for key, t in state.items():
            m = _EXPERT.match(key)
            if m is None or int(m.group(2)) != 0:  # experts differ everywhere but the anchor FFN
                state[key] = t + 0.01 * torch.randn(t.shape, generator=g)
        path = root / f"expert{i}"
        path.mkdir()
        save_file(state, path / "model.safetensors")
        paths.append(path)
    return paths


def read_throughput(paths: list[Path]) -> float:
    """MiB/s reading the experts' files in 1 MiB blocks (page cache permitting, as the merges do)."""
    total, start = 0, time.perf_counter()
    for p in paths:
        with open(p / "model.safetensors", "rb") as f:
            while block := f.read(1 << 20):
                total += len(block)
    return total / (1 << 20) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experts", nargs="*", type=Path, help="expert output folders (default: synthetic)")
    parser.add_argument("--synthetic", type=int, default=4, help="number of synthetic experts")
    parser.add_argument("--one", nargs=2, metavar=("KIND", "DEST"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return one(args.one[0], args.experts, Path(args.one[1]))

    import torch
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        experts = args.experts or synthetic_experts(tmp, args.synthetic)
        size = sum((p / "model.safetensors").stat().st_size for p in experts) / (1 << 20)
        results = {}
        for kind in ("streaming", "naive"):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--one",
                    kind,
                    str(tmp / f"{kind}.safetensors"),
                    "--experts",
                    *map(str, experts),
                ],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONWARNINGS": "ignore"},
            )
            results[kind] = json.loads(out.stdout.strip().splitlines()[-1])
        a, b = load_file(tmp / "streaming.safetensors"), load_file(tmp / "naive.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "merges differ"
        disk = read_throughput(experts)

    s, n = results["streaming"], results["naive"]
    print(
        f"{len(experts)} experts, {size:.1f} MiB on disk, one expert {size / len(experts):.1f} MiB, "
        f"merged output {s['output_mib']:.1f} MiB (one expert + output: "
        f"{size / len(experts) + s['output_mib']:.1f} MiB); outputs identical"
    )
    print(f"{'':12}{'seconds':>10}{'MiB/s':>10}{'peak MiB':>10}")
    for kind, r in results.items():
        print(f"{kind:12}{r['seconds']:10.2f}{size / r['seconds']:10.0f}{r['peak_mib']:10.1f}")
    print(f"{'disk read':12}{size / disk:10.2f}{disk:10.0f}")
    print(
        f"ratios: streaming/naive time {s['seconds'] / n['seconds']:.2f}, "
        f"peak memory {s['peak_mib'] / max(n['peak_mib'], 1e-9):.2f}; "
        f"streaming at {size / s['seconds'] / disk:.0%} of disk read throughput"
    )


if __name__ == "__main__":
    main()
