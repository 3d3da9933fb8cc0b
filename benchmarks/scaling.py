"""Cost of adding the k-th domain, measured: BAR against a monolithic retrain, k = 1..N.

    python benchmarks/scaling.py [--preset tiny] [--workdir /tmp/bar-scaling]

One fresh project (git + DVC, `--preset`). For k = 1..N (params.yaml experts = the first k of
the preset's experts) it runs `dvc repro` — BAR adds expert k: mix_data@k, train_expert@k,
merge_experts and fit_router re-run (evaluate too; it is not counted) — and then
`dvc repro baselines/dvc.yaml:baseline@monolithic`, a dense model retrained on the k domains.
What each cost is read from the MLflow runs those commands created (wall and processor
seconds measured by the stages, analytic training FLOPs), printed as a table with the ratios
and plotted to scaling.png in the workdir.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
FILES = [
    "bar",
    "specs",
    "dvc.yaml",
    "baselines/dvc.yaml",
    "params.yaml",
    ".dvc/config",
    ".dvc/.gitignore",
    ".dvcignore",
    ".gitignore",
    "pyproject.toml",
]
BAR_STAGES = ("mix_data", "train_expert", "merge_experts", "fit_router")


def sh(cmd: list[str], cwd: Path) -> None:
    # The stages' `python` is this interpreter (its environment's bin first on PATH).
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}")


def project(dest: Path, preset: str) -> list[str]:
    """A fresh copy of this repository at `dest`; returns the preset's experts."""
    shutil.rmtree(dest, ignore_errors=True)
    for name in FILES:
        src, dst = ROOT / name, dest / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, dst)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params.update(preset=preset, baselines=["monolithic"])
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(["git", "init", "-q", "-b", "main"], dest)
    sh(["git", "add", "-A"], dest)
    sh(["git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-q", "-m", "bench"], dest)
    return params["experts"]


def runs_since(root: Path, start_ms: int) -> dict[str, dict[str, float]]:
    """{dvc stage: cost metrics} of the stage runs created since `start_ms`."""
    from bar import tracking

    mlflow = tracking._mlflow(root)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(tracking.EXPERIMENT)
    runs = client.search_runs(
        [exp.experiment_id], f"attributes.start_time >= {start_ms} and attributes.status = 'FINISHED'"
    )
    return {r.data.tags["dvc_stage"]: r.data.metrics for r in runs if "dvc_stage" in r.data.tags}


def cost(runs: dict[str, dict[str, float]], stages) -> dict[str, float]:
    picked = [m for s, m in runs.items() if s.split("@")[0] in stages]
    return {k: sum(m.get(f"cost/{k}", 0.0) for m in picked) for k in ("wall_seconds", "cpu_seconds", "flops")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bar-scaling"))
    args = parser.parse_args()
    root = args.workdir.resolve()
    experts = project(root, args.preset)
    dvc = [sys.executable, "-m", "dvc"]
    rows = []
    for k in range(1, len(experts) + 1):
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["experts"] = experts[:k]
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        start = int(time.time() * 1000)
        print(f"k={k}: dvc repro (adds {experts[k - 1]})", flush=True)
        sh([*dvc, "repro"], root)
        bar = cost(runs_since(root, start), BAR_STAGES)
        # A retrain from scratch: without this the baseline would start from the phases it
        # shares with the previous k (mid-training is the same data once math and code are in).
        shutil.rmtree(root / "checkpoints" / "baseline" / "monolithic", ignore_errors=True)
        start = int(time.time() * 1000)
        print(f"k={k}: dvc repro baselines/dvc.yaml:baseline@monolithic", flush=True)
        sh([*dvc, "repro", "baselines/dvc.yaml:baseline@monolithic"], root)
        mono = cost(runs_since(root, start), ("baseline",))
        rows.append({"k": k, "added": experts[k - 1], "bar": bar, "retrain": mono})

    print(f"\nCost of adding the k-th domain ({args.preset} preset), measured; ratio = BAR / retrain")
    print(
        f"{'k':>2} {'added':>9} | {'BAR wall s':>10} {'retrain wall s':>14} {'ratio':>6} | "
        f"{'BAR CPU s':>9} {'retrain CPU s':>13} {'ratio':>6} | {'BAR FLOPs':>9} {'retrain FLOPs':>13} {'ratio':>6}"
    )
    for r in rows:
        b, m = r["bar"], r["retrain"]
        print(
            f"{r['k']:>2} {r['added']:>9} | {b['wall_seconds']:>10.1f} {m['wall_seconds']:>14.1f} "
            f"{b['wall_seconds'] / m['wall_seconds']:>6.2f} | {b['cpu_seconds']:>9.1f} {m['cpu_seconds']:>13.1f} "
            f"{b['cpu_seconds'] / m['cpu_seconds']:>6.2f} | {b['flops']:>9.3g} {m['flops']:>13.3g} "
            f"{b['flops'] / m['flops']:>6.2f}"
        )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ks = [r["k"] for r in rows]
    ax.plot(ks, [r["bar"]["wall_seconds"] for r in rows], "o-", label="BAR: expert k + merge + router")
    ax.plot(ks, [r["retrain"]["wall_seconds"] for r in rows], "s-", label="monolithic retrain on k domains")
    ax.set(
        xlabel="domains k", ylabel="wall seconds (measured)", xticks=ks, title=f"adding the k-th domain ({args.preset})"
    )
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(root / "scaling.png", dpi=100)
    print(f"plot: {root / 'scaling.png'}")


if __name__ == "__main__":
    main()
