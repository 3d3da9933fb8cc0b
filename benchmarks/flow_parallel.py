"""The bar-pipeline flow with stages side by side against serial `dvc repro`, in one run.

    python benchmarks/flow_parallel.py [--preset tiny] [--max-parallel 2] [--prefect-server] [--workdir DIR]

Copies this repository's tracked files (working-tree state) twice, runs `dvc repro` in one and
`python -m flows.pipeline --max-parallel N` in the other, one after the other, every process on
one thread (OMP_NUM_THREADS=1, so both compute the same sums), and prints each wall time, the
speed-up, and whether dvc.lock and every DVC metric are identical. With `--prefect-server`, a
third copy runs the flow against a running `prefect server start` (as deployments run) instead
of the ephemeral server Prefect starts in a process without PREFECT_API_URL.
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
sys.path.insert(0, str(ROOT))


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


def timed(cmd: list[str], cwd: Path, env: dict | None = None) -> float:
    # Stage commands (`python -m bar.stages...`) run with this interpreter, as in an activated venv.
    env = env or dict(os.environ)
    path = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env = env | {"OMP_NUM_THREADS": "1", "PATH": path}
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
    parser.add_argument("--workdir", type=Path, default=None, help="where the copies go (default: a temporary one)")
    parser.add_argument(
        "--prefect-server", action="store_true", help="also run the flow against a running Prefect server"
    )
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="flow_parallel_"))
    names = ["serial", "flow"] + (["flow-server"] if args.prefect_server else [])
    copies = {name: copy(work / name, args.preset) for name in names}
    flow = [sys.executable, "-m", "flows.pipeline", "--max-parallel", str(args.max_parallel), "--root"]
    took = {
        "dvc repro (serial)": timed([sys.executable, "-m", "dvc", "repro"], copies["serial"]),
        f"flow, {args.max_parallel} at once": timed([*flow, str(copies["flow"])], copies["flow"]),
    }
    if args.prefect_server:
        from benchmarks.common import prefect_server

        with prefect_server() as (_, env):
            took[f"flow, {args.max_parallel} at once, server"] = timed(
                [*flow, str(copies["flow-server"])], copies["flow-server"], env
            )
    print(f"preset {args.preset}, every process on 1 thread, {os.cpu_count()} cores ({work})")
    for name, seconds in took.items():
        print(f"  {name:34s} {seconds:8.1f} s")
    serial_s = took["dvc repro (serial)"]
    for name, seconds in list(took.items())[1:]:
        print(f"  speed-up of the {name + ':':34s} {serial_s / seconds:5.2f}x")
    lock_s, metrics_s = results(copies["serial"])
    for name in names[1:]:
        lock_f, metrics_f = results(copies[name])
        print(
            f"  {name}: dvc.lock identical to serial: {lock_s == lock_f}; metrics identical: {metrics_s == metrics_f}"
        )


if __name__ == "__main__":
    main()
