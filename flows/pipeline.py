"""The `bar-pipeline` flow: the DVC pipeline as Prefect tasks, one per stage, in DAG order.

DVC stays in charge of caching: the flow asks `dvc status` what changed, runs each stage
that changed or depends on a changed one with `dvc repro --single-item <stage>`, and shows
the others as `Skipped`. Each stage task retries on failure (training stages resume from
their checkpoints). The flow opens one MLflow run, `pipeline`, that every stage run nests
under. Results are read from `dvc.lock` and `metrics/`, never parsed from logs.

    python -m flows.pipeline [--root DIR] [TARGET ...]    # no server needed (ephemeral Prefect)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from graphlib import TopologicalSorter
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.states import Completed

DVC = [sys.executable, "-m", "dvc"]


def dvc(args: list[str], root: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    # Stage commands (`python -m bar.stages...`) run with this interpreter's environment first on PATH.
    env = dict(env or os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return subprocess.run([*DVC, *args], cwd=root, capture_output=True, text=True, env=env)


def plan(root: Path, targets: list[str]) -> tuple[list[str], set[str]]:
    """Every stage the targets need, in DAG order, and those that must run: the ones DVC
    reports as changed and everything downstream of them."""
    dag = dvc(["dag", "--dot", *targets], root)
    if dag.returncode:
        raise RuntimeError(f"dvc dag failed in {root}: {dag.stderr.strip()}")
    nodes = re.findall(r'^"([^"]+)";$', dag.stdout, re.M)
    edges = re.findall(r'^"([^"]+)" -> "([^"]+)";$', dag.stdout, re.M)
    graph = {n: set() for n in nodes}
    for upstream, downstream in edges:
        graph[downstream].add(upstream)
    order = list(TopologicalSorter(graph).static_order())
    status = dvc(["status", "--json", *targets], root)
    if status.returncode:
        raise RuntimeError(f"dvc status failed in {root}: {status.stderr.strip()}")
    changed = set(json.loads(status.stdout or "{}"))
    run = set()
    for stage in order:  # upstream first, so one pass propagates
        if stage in changed or graph[stage] & run:
            run.add(stage)
    return order, run


def lock_entry(root: Path, stage: str) -> dict | None:
    from bar.tracking import read_dvc_file

    lock = root / "dvc.lock"
    return read_dvc_file(lock).get("stages", {}).get(stage) if lock.exists() else None


@task(task_run_name="{stage}", retries=1, retry_delay_seconds=5)
def run_stage(stage: str, root: Path, needed: bool, parent_run_id: str):
    """`dvc repro --single-item <stage>`; Skipped when DVC has it up to date."""
    logger = get_run_logger()
    if not needed:
        return Completed(name="Skipped", message=f"{stage} is up to date (dvc status)")
    before = lock_entry(root, stage)
    env = {**os.environ, "BAR_PARENT_RUN_ID": parent_run_id}
    proc = dvc(["repro", "--single-item", stage], root, env)
    tail = "\n".join(proc.stdout.splitlines()[-20:])
    if proc.returncode:
        errors = "\n".join(proc.stderr.replace("\r", "\n").splitlines()[-30:])
        raise RuntimeError(f"dvc repro {stage} failed (exit {proc.returncode}):\n{tail}\n{errors}")
    logger.info("%s\n%s", stage, tail)
    after = lock_entry(root, stage)
    if after == before:
        return Completed(name="Skipped", message=f"{stage} was up to date (DVC run cache or no change)")
    return {"stage": stage, "outs": {o["path"]: o.get("md5") for o in after.get("outs", [])}}


@flow(name="bar-pipeline", log_prints=True)
def bar_pipeline(targets: list[str] | None = None, root: str = ".") -> dict:
    """Run the DVC pipeline (or the stages `targets` need: `baselines/dvc.yaml` for the
    baselines) as one task per stage."""
    from prefect.runtime import flow_run

    from bar import tracking

    root = Path(root).resolve()
    targets = list(targets or ["dvc.yaml"])  # not every dvc.yaml of the repo: the baselines are opt-in
    order, needed = plan(root, targets)
    logger = get_run_logger()
    logger.info(
        "%d stages, %d to run: %s",
        len(order),
        len(needed),
        ", ".join(s for s in order if s in needed) or "none (everything is up to date)",
    )
    with tracking.pipeline_run(
        "pipeline", {"prefect_flow_run_id": str(flow_run.id), "targets": ",".join(targets)}, root
    ) as run:
        states = {}
        for stage in order:  # one at a time: stages share the machine's cores
            state = run_stage(stage, root, stage in needed, run.run_id, return_state=True)
            states[stage] = state.name
            if state.is_failed():
                state.result()  # raises: the flow fails, and so does its MLflow run
        metrics = root / "metrics" / "evaluate.json"
        routed = json.loads(metrics.read_text()).get("routed", {}) if metrics.exists() else {}
        if routed:
            run.log_metrics({f"routed/{d}": v for d, v in routed.items()})
        run.set_tags({"ran": ",".join(s for s, n in states.items() if n != "Skipped") or "none"})
    return {"stages": states, "routed": routed, "mlflow_run_id": run.run_id}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "targets",
        nargs="*",
        help="DVC stages to bring up to date (default: dvc.yaml, the main pipeline; baselines/dvc.yaml: the baselines)",
    )
    parser.add_argument("--root", default=".", help="the bar repository (default: .)")
    args = parser.parse_args()
    result = bar_pipeline(args.targets, args.root)
    print(json.dumps(result["stages"], indent=1))


if __name__ == "__main__":
    main()
