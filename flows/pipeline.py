"""The `bar-pipeline` flow: the DVC pipeline as Prefect tasks, one per stage, in DAG order.

DVC stays in charge of caching: the flow asks `dvc status` what changed, runs each stage
that changed or depends on a changed one, and shows the others as `Skipped` (a run with
nothing to do starts no task and no MLflow run). Each stage task
retries on failure (training stages resume from their checkpoints). The flow opens one MLflow
run, `pipeline`, that every stage run nests under. Results are read from `dvc.lock` and
`metrics/`, never parsed from logs.

Stages whose inputs are ready run side by side, up to `params.yaml: max_parallel` (the experts
and their data), each on the machine's cores / max_parallel (`BAR_CORES`). At max_parallel 1
each stage is a `dvc repro --single-item <stage>`. Above it, every stage runs its DVC command
and then `dvc commit`s its outputs, one commit at a time (`dvc repro` holds the repository's
lock while its command runs), which writes the dvc.lock entry `dvc repro` writes (tested).
A stage that fails stops new ones from starting; the others finish and are committed, so the
next run has only the rest to do.

    python -m flows.pipeline [--root DIR] [--max-parallel N] [TARGET ...]    # no server needed (ephemeral Prefect)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from flows.todo import Plan, Prefetch, arguments, plan

PREFETCH = None  # on the command line, DVC's status asked in a process of its own while Prefect imports
if __name__ == "__main__":
    PREFETCH = Prefetch(sys.argv[1:])

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.futures import as_completed  # noqa: E402
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings  # noqa: E402
from prefect.states import Completed  # noqa: E402

DVC = [sys.executable, "-m", "dvc"]
COMMIT = threading.Lock()  # `dvc commit` takes the repository's lock: one at a time


def with_path(env: dict | None = None) -> dict:
    """Stage commands (`python -m bar.stages...`) run with this interpreter's environment first on PATH."""
    env = dict(env or os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def dvc(args: list[str], root: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*DVC, *args], cwd=root, capture_output=True, text=True, env=with_path(env))


def lock_entry(root: Path, stage: str) -> dict | None:
    from bar.tracking import read_dvc_file

    lock = root / "dvc.lock"
    return read_dvc_file(lock).get("stages", {}).get(stage) if lock.exists() else None


def failure(what: str, proc: subprocess.CompletedProcess) -> RuntimeError:
    tail = "\n".join(proc.stdout.splitlines()[-20:])
    errors = "\n".join(proc.stderr.replace("\r", "\n").splitlines()[-30:])
    return RuntimeError(f"{what} failed (exit {proc.returncode}):\n{tail}\n{errors}")


def run_and_commit(stage: str, root: Path, env: dict) -> subprocess.CompletedProcess:
    """What `dvc repro --single-item` does, without holding the repository's lock while the
    command runs: remove the stage's outputs (but `persist` ones), run its command, `dvc commit`."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    # DVC resolves a bare stage name against the working directory's dvc.yaml: name the file.
    target = str(root / (stage if ":" in stage else f"dvc.yaml:{stage}"))
    with Repo(str(root)) as repo:
        (found,) = repo.stage.collect(target)
        cmd, outs = found.cmd, [Path(o.fs_path) for o in found.outs if not o.persist]
    for out in outs:
        shutil.rmtree(out) if out.is_dir() else out.unlink(missing_ok=True)
    env = with_path(env) | {"DVC_ROOT": str(root), "DVC_STAGE": stage}
    proc = subprocess.run(cmd, shell=True, cwd=root, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise failure(f"{stage}: {cmd}", proc)
    with COMMIT, Repo(str(root)) as repo:  # `dvc commit --force <stage>`, in this process
        try:
            repo.commit(target, force=True)
        except DvcException as e:
            raise RuntimeError(f"dvc commit {stage} failed: {e}") from e
    return proc


@task(task_run_name="{stage}", retries=1, retry_delay_seconds=5)
def run_stage(stage: str, root: Path, needed: bool, parent_run_id: str, cores: int | None = None):
    """`dvc repro --single-item <stage>`, or with `cores` (beside other stages) its command on
    that many cores and `dvc commit`; Skipped when DVC has it up to date."""
    logger = get_run_logger()
    if not needed:
        return Completed(name="Skipped", message=f"{stage} is up to date (dvc status)")
    before = lock_entry(root, stage)
    env = {**os.environ, "BAR_PARENT_RUN_ID": parent_run_id}
    if cores is None:
        proc = dvc(["repro", "--single-item", stage], root, env)
        if proc.returncode:
            raise failure(f"dvc repro {stage}", proc)
    else:
        proc = run_and_commit(stage, root, env | {"BAR_CORES": str(cores)})
    logger.info("%s\n%s", stage, "\n".join(proc.stdout.splitlines()[-20:]))
    after = lock_entry(root, stage)
    if after == before:
        return Completed(name="Skipped", message=f"{stage} was up to date (DVC run cache or no change)")
    return {"stage": stage, "outs": {o["path"]: o.get("md5") for o in after.get("outs", [])}}


@flow(name="bar-pipeline", log_prints=True)
def bar_pipeline(targets: list[str] | None = None, root: str = ".", max_parallel: int | None = None) -> dict:
    """Run the DVC pipeline (or the stages `targets` need: `baselines/dvc.yaml` for the
    baselines) as one task per stage, up to `max_parallel` at once (default: params.yaml's)."""
    from prefect.runtime import flow_run

    from bar import tracking
    from bar.specs import Specs

    root = Path(root).resolve()
    targets = list(targets or ["dvc.yaml"])  # not every dvc.yaml of the repo: the baselines are opt-in
    max_parallel = max_parallel or Specs(root).params.max_parallel
    cores = None if max_parallel == 1 else max(1, (os.cpu_count() or 1) // max_parallel)
    todo = (PREFETCH and PREFETCH.take(root, targets)) or plan(root, targets)
    logger = get_run_logger()
    logger.info(
        "%d stages, %d to run, up to %d at once: %s",
        len(todo.order),
        len(todo.needed),
        max_parallel,
        ", ".join(s for s in todo.order if s in todo.needed) or "none (everything is up to date)",
    )
    if not todo.needed:  # a no-op run: no tasks, no MLflow run (Prefect's flow run records it)
        return {"stages": dict.fromkeys(todo.order, "Skipped"), "routed": routed_scores(root), "mlflow_run_id": None}
    # In the repository for the flow's duration: DVC's run cache, which `dvc commit` fills in the
    # stage threads, names dvc.yaml relative to the working directory (one for every thread).
    with (
        contextlib.chdir(root),
        tracking.pipeline_run(
            "pipeline", {"prefect_flow_run_id": str(flow_run.id), "targets": ",".join(targets)}, root
        ) as run,
    ):
        states, failed = schedule(
            todo,
            max_parallel,
            lambda stage: run_stage.submit(stage, root, stage in todo.needed, run.run_id, cores),
        )
        if failed is not None:
            failed.result()  # raises: the flow fails, and so does its MLflow run
        routed = routed_scores(root)
        if routed:
            run.log_metrics({f"routed/{d}": v for d, v in routed.items()})
        run.set_tags({"ran": ",".join(s for s, n in states.items() if n != "Skipped") or "none"})
    return {"stages": states, "routed": routed, "mlflow_run_id": run.run_id}


def routed_scores(root: Path) -> dict[str, float]:
    metrics = root / "metrics" / "evaluate.json"
    return json.loads(metrics.read_text()).get("routed", {}) if metrics.exists() else {}


def schedule(todo: Plan, max_parallel: int, submit) -> tuple[dict[str, str], object]:
    """Submit each stage once its upstream stages have finished, at most `max_parallel` at a
    time, the longest chain first. After a failure nothing new starts and the running stages
    finish. Returns each stage's state name in DAG order, and the failed state (or None)."""
    states, running, failed = {}, {}, None
    # Longest chain first: of the ready stages, the one with the most stages after it (pretrain
    # before the experts' data), so a free slot never delays the critical path. Ties: DAG order.
    below: dict[str, int] = {}
    for stage in reversed(todo.order):
        below[stage] = 1 + max((below[d] for d in todo.order if stage in todo.upstream[d]), default=0)
    pending = sorted(todo.order, key=lambda s: -below[s])
    while pending or running:
        for stage in list(pending) if failed is None else []:
            if len(running) >= max_parallel:
                break
            if all(states.get(u) in ("Completed", "Skipped") for u in todo.upstream[stage]):
                pending.remove(stage)
                running[stage] = submit(stage)
        if not running:
            break
        done = next(as_completed(list(running.values())))
        stage = next(s for s, f in running.items() if f is done)
        del running[stage]
        done.wait()
        states[stage] = done.state.name
        if done.state.is_failed() and failed is None:
            failed = done.state
    return {s: states[s] for s in todo.order if s in states}, failed


def command_line():
    """Prefect settings of a run from the command line: no flow-run heartbeat unless
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY is set. The heartbeat feeds the server's zombie-run
    automation for deployment runs (flows/serve.py), which nobody watches; a command-line run
    has its user, and the heartbeat thread would hold the process up to a second at the end."""
    off = {} if "PREFECT_FLOWS_HEARTBEAT_FREQUENCY" in os.environ else {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
    return temporary_settings(updates=off)


def main() -> None:
    parser = arguments()
    args = parser.parse_args()
    if args.max_parallel is not None and args.max_parallel < 1:
        parser.error(f"--max-parallel {args.max_parallel}: must be 1 or more")
    with command_line():
        result = bar_pipeline(args.targets, args.root, args.max_parallel)
    print(json.dumps(result["stages"], indent=1))


if __name__ == "__main__":
    main()
