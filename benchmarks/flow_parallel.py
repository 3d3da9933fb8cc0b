"""The bar-pipeline flow with stages side by side against serial `dvc repro`, in one run.

    python benchmarks/flow_parallel.py [--preset tiny] [--max-parallel 2] [--workdir DIR]

Copies this repository's tracked files (working-tree state) twice, runs `dvc repro` in one and
`python -m flows.pipeline --max-parallel N` in the other, one after the other, every process on
one thread (OMP_NUM_THREADS=1, so both compute the same sums), and prints each wall time, the
speed-up, and whether dvc.lock and every DVC metric are identical.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def copy(dest: Path, preset: str) -> Path:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file() and not name.startswith(("reports/", "docs/", "mlruns/")):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    params = yaml.safe_load((dest / "params.yaml").read_text()) | {"preset": preset}
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q", "-b", "main"], ["git", "add", "-A"], ["git", "commit", "-q", "-m", "copy"]):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)
    return dest


def timed(cmd: list[str], cwd: Path) -> float:
    # Stage commands (`python -m bar.stages...`) run with this interpreter, as in an activated venv.
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = os.environ | {"OMP_NUM_THREADS": "1", "PATH": path}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def results(project: Path) -> tuple[dict, dict]:
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    metrics = {str(p.relative_to(project)): json.loads(p.read_text()) for p in (project / "metrics").rglob("*.json")}
    return lock, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--max-parallel", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=None, help="where the two copies go (default: a temporary one)")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="flow_parallel_"))
    serial, flow = (copy(work / name, args.preset) for name in ("serial", "flow"))
    took = {
        "dvc repro (serial)": timed([sys.executable, "-m", "dvc", "repro"], serial),
        f"flow, {args.max_parallel} at once": timed(
            [sys.executable, "-m", "flows.pipeline", "--max-parallel", str(args.max_parallel), "--root", str(flow)],
            flow,
        ),
    }
    (lock_s, metrics_s), (lock_f, metrics_f) = results(serial), results(flow)
    print(f"preset {args.preset}, every process on 1 thread, {os.cpu_count()} cores ({work})")
    for name, seconds in took.items():
        print(f"  {name:24s} {seconds:8.1f} s")
    serial_s, flow_s = took.values()
    print(f"  speed-up                 {serial_s / flow_s:8.2f}x")
    print(f"  dvc.lock identical: {lock_s == lock_f}; metrics identical: {metrics_s == metrics_f}")


if __name__ == "__main__":
    main()
