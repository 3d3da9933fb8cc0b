"""What each stage (and each flow run) records in its MLflow run: the resolved spec, lineage tags, its
DVC inputs, its cost, and the models it registers."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

from bar.tracking.dvc_files import stage_inputs
from bar.tracking.registry import CANDIDATE, _versions
from bar.tracking.store import _mlflow, repo_root


def git_commit(cwd: Path | str = ".") -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (out.stdout.strip() or "unknown") + ("-dirty" if dirty else "")


def _flatten(data: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for k, v in data.items():
        if isinstance(v, dict) and v:
            flat |= _flatten(v, f"{prefix}{k}.")
        else:
            flat[f"{prefix}{k}"] = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return flat


def _cpu_seconds() -> float:
    """Processor seconds of this process and of its finished children (the torchrun workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class StageRun:
    """What a stage records in its MLflow run."""

    def __init__(self, mlflow, run):
        self.mlflow, self.run, self.started = mlflow, run, (time.time(), _cpu_seconds())

    @property
    def run_id(self) -> str:
        return self.run.info.run_id

    def log_cost(self) -> None:
        """Wall and processor seconds since the run started."""
        wall, cpu = time.time() - self.started[0], _cpu_seconds() - self.started[1]
        self.mlflow.log_metrics({"cost/wall_seconds": wall, "cost/cpu_seconds": cpu})

    def log_history(self, records: list[dict], prefix: str = "train/") -> None:
        """Per-step records ({"step": n, name: value, ...}) as metrics with steps, in batches."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(f"{prefix}{k}", float(v), now, int(r["step"])) for r in records for k, v in r.items() if k != "step"
        ]
        client = self.mlflow.MlflowClient()
        for i in range(0, len(metrics), 1000):
            client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def log_metrics(self, metrics: dict[str, float]) -> None:
        self.mlflow.log_metrics({k: float(v) for k, v in metrics.items()})

    def set_tags(self, tags: dict[str, str]) -> None:
        self.mlflow.set_tags({k: str(v) for k, v in tags.items()})

    def log_dict(self, data: dict, name: str) -> None:
        self.mlflow.log_dict(data, name)

    def log_artifact(self, path: Path | str, folder: str | None = None) -> None:
        self.mlflow.log_artifact(str(path), folder)

    def register_model(self, name: str, folder: Path, tags: dict[str, str]) -> str:
        """A new version of registered model `name` from `folder` (logged as this run's `model/`
        artifact), tagged with `tags` and aliased `candidate`. Returns the version."""
        client = self.mlflow.MlflowClient()
        self.mlflow.log_artifacts(str(folder), "model")
        if not client.search_registered_models(f"name = '{name}'"):
            client.create_registered_model(name)
        version = client.create_model_version(
            name, f"{self.run.info.artifact_uri}/model", run_id=self.run_id, tags={k: str(v) for k, v in tags.items()}
        ).version
        client.set_registered_model_alias(name, CANDIDATE, version)
        self.mlflow.set_tag("registered_model", f"{name}/{version}")
        return version


def _log_inputs(mlflow, stage: str, cwd: Path | str) -> None:
    """Each DVC data input of the stage as an MLflow dataset: name = path, digest = DVC's md5."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    context = "evaluation" if stage == "evaluate" else "training"
    for path, md5 in stage_inputs(stage, cwd).items():
        with warnings.catch_warnings():  # a file URI matches two equivalent local source types
            warnings.simplefilter("ignore")
            source = resolve_dataset_source((repo_root(cwd) / path).as_uri())
        log_input(mlflow, MetaDataset(source, name=path, digest=md5), context)


def log_input(mlflow, dataset, context: str, attempts: int = 5) -> None:
    """`mlflow.log_input`, safe when several stages log the same dataset at once: MLflow's SQL
    store looks a dataset up, then inserts it, so a process that loses the race gets a unique
    constraint error (from the store, or from a tracking server's); the retry finds the winner's row."""
    from mlflow.exceptions import MlflowException

    for attempt in range(attempts):
        try:
            return mlflow.log_input(dataset, context=context)
        except MlflowException as e:
            lost_race = any(s in str(e) for s in ("UNIQUE constraint failed: datasets", "duplicate key value"))
            if not lost_race or attempt == attempts - 1:
                raise


def _parent_expert(mlflow, expert: str) -> dict[str, str]:
    """The expert version this run upgrades: the newest registered `bar-expert-<expert>`."""
    client = mlflow.MlflowClient()
    name = f"bar-expert-{expert}"
    versions = _versions(client, name)
    if not versions:
        return {"parent_expert_version": "none", "parent_model_version": "none"}
    latest = versions[-1]
    return {
        "parent_expert_version": latest.tags.get("expert_version", "?"),
        "parent_model_version": latest.version,
        "parent_expert_run_id": latest.run_id,
    }


@contextmanager
def pipeline_run(name: str, tags: dict[str, str], cwd: Path | str = "."):
    """The MLflow run of one flow run. Yields the run; stage runs started by child processes
    with `BAR_PARENT_RUN_ID` set to its id nest under it. A flow that raises leaves it FAILED."""
    mlflow = _mlflow(cwd)
    with mlflow.start_run(run_name=name, tags={"stage": "pipeline", "git_commit": git_commit(cwd), **tags}) as run:
        handle = StageRun(mlflow, run)
        try:
            yield handle
        finally:
            handle.log_cost()


@contextmanager
def stage_run(stage: str, *, spec: dict, tags: dict[str, str], cwd: Path | str = ".", nproc: int = 1):
    """One MLflow run for one execution of a stage, named like the stage.

    Logs the resolved spec (as params and as `spec.json`), lineage tags, the stage's DVC data
    inputs (`mlflow.log_input`), the CPU threads each of its `nproc` processes uses and, on exit,
    wall and processor seconds. An expert's run is tagged with the version it upgrades. A stage
    that raises leaves its run FAILED.
    """
    from bar.launch import threads_per_rank

    mlflow = _mlflow(cwd)
    all_tags = {
        "stage": stage,
        "dvc_stage": stage,
        "git_commit": git_commit(cwd),
        "threads_per_rank": str(threads_per_rank(nproc)),
        **tags,
    }
    if "expert" in tags:
        all_tags |= _parent_expert(mlflow, tags["expert"])
    parent = os.environ.get("BAR_PARENT_RUN_ID")
    # Leaving the `with` on an exception ends the run as FAILED.
    with mlflow.start_run(run_name=stage, tags=all_tags, parent_run_id=parent or None) as run:
        handle = StageRun(mlflow, run)
        mlflow.log_params(_flatten(spec))
        mlflow.log_dict(spec, "spec.json")
        _log_inputs(mlflow, stage, cwd)
        try:
            yield handle
        finally:
            handle.log_cost()
