"""Pipeline overhead when everything is up to date, side by side in one run.

    python benchmarks/overhead.py --root /path/to/a/repo/after/dvc/repro [--repeats 3] [TARGET ...]

Times, each as a fresh process (median of `--repeats`): `dvc repro` (a no-op), the
`bar-pipeline` flow (`python -m flows.pipeline`: it asks DVC what changed, shows every stage
as skipped and opens one MLflow pipeline run) with an ephemeral Prefect server and, with
`--prefect-server`, against a running one (`prefect server start` on 127.0.0.1, as deployments
run), and `bar --help`. Prints the flows' ratios over plain `dvc repro`, and which heavy
modules `bar --help` imports.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
HEAVY = ("torch", "mlflow", "megatron", "transformers", "prefect", "dvc")


def timed(cmd: list[str], cwd: Path, env: dict | None = None) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stderr[-2000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="a bar repository whose pipeline is up to date")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--prefect-server", action="store_true", help="also time the flow against a running Prefect server"
    )
    parser.add_argument("targets", nargs="*", help="stages to bring up to date (default: the whole pipeline)")
    args = parser.parse_args()
    root = args.root.resolve()
    status = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json", *args.targets], cwd=root, capture_output=True, text=True
    )
    if json.loads(status.stdout or "{}"):
        raise SystemExit(f"{root}: the pipeline is not up to date (dvc status); run `dvc repro` there first")

    commands = {
        "dvc repro (no-op)": [sys.executable, "-m", "dvc", "repro", *args.targets],
        "bar-pipeline flow (no-op)": [sys.executable, "-m", "flows.pipeline", "--root", str(root), *args.targets],
        "bar --help": [sys.executable, "-m", "bar.cli", "--help"],
    }
    times = {name: statistics.median(timed(cmd, root) for _ in range(args.repeats)) for name, cmd in commands.items()}
    if args.prefect_server:
        from benchmarks.common import prefect_server

        with prefect_server() as (_, env):
            flow = commands["bar-pipeline flow (no-op)"]
            timed(flow, root, env)  # the first run registers the flow
            times["flow, running server (no-op)"] = statistics.median(
                timed(flow, root, env) for _ in range(args.repeats)
            )
    code = f"import sys, bar.cli; print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    heavy = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT).stdout.strip()

    print(f"median of {args.repeats} runs, each a fresh process ({root}; targets: {args.targets or 'all'})")
    for name, seconds in times.items():
        print(f"  {name:34s} {seconds:7.2f} s")
    for name in ("bar-pipeline flow (no-op)", "flow, running server (no-op)"):
        if name in times:
            print(
                f"  {name.removesuffix(' (no-op)') + ' / dvc repro':34s} {times[name] / times['dvc repro (no-op)']:7.2f}x"
            )
    print(f"  heavy modules imported by `bar --help`: {heavy or 'none'}")


if __name__ == "__main__":
    main()
