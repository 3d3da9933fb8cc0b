"""MLflow tracking: the only module that imports mlflow.

The store is SQLite inside the repository's `mlruns/` with an absolute URI (MLflow 3's file
store is deprecated and has no model registry). `dvc exp run --temp/--queue` runs stages in
a copy of the repository under `<repo>/.dvc/tmp/exps/`: runs from there are recorded in the
original repository's store, not in the copy that is thrown away. `BAR_TRACKING_URI`
overrides all of this (e.g. a shared tracking server).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import yaml

EXPERIMENT = "bar"


def repo_root(cwd: Path | str = ".") -> Path:
    """The repository whose `mlruns/` records this run (the original one for DVC temp experiments)."""
    path = Path(cwd).resolve()
    parts = path.parts
    for i in range(len(parts) - 3):
        if parts[i:i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return path


def tracking_uri(cwd: Path | str = ".") -> str:
    uri = os.environ.get("BAR_TRACKING_URI")
    if uri:
        return uri
    store = repo_root(cwd) / "mlruns"
    store.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{store / 'mlflow.db'}"


def _mlflow(cwd: Path | str = "."):
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(cwd))
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        artifacts = repo_root(cwd) / "mlruns" / "artifacts"
        uri = os.environ.get("BAR_TRACKING_URI")
        mlflow.create_experiment(EXPERIMENT, artifact_location=None if uri else artifacts.as_uri())
    mlflow.set_experiment(EXPERIMENT)
    return mlflow


def git_commit(cwd: Path | str = ".") -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"
    return (out.stdout.strip() or "unknown") + ("-dirty" if dirty else "")


def dvc_md5(path: str, cwd: Path | str = ".") -> str:
    """The md5 DVC recorded in dvc.lock for an output path (how DVC versions that data)."""
    lock = Path(cwd) / "dvc.lock"
    if lock.exists():
        for stage in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).values():
            for out in stage.get("outs", []):
                if out.get("path") == path:
                    return out.get("md5", "unknown")
    return "unknown"


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

    def log_history(self, records: list[dict], prefix: str = "train/") -> None:
        """Per-step records ({"step": n, name: value, ...}) as metrics with steps, in batches."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(f"{prefix}{k}", float(v), now, int(r["step"]))
                   for r in records for k, v in r.items() if k != "step"]
        client = self.mlflow.MlflowClient()
        for i in range(0, len(metrics), 1000):
            client.log_batch(self.run_id, metrics=metrics[i:i + 1000])

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
        version = client.create_model_version(name, f"{self.run.info.artifact_uri}/model", run_id=self.run_id,
                                              tags={k: str(v) for k, v in tags.items()}).version
        client.set_registered_model_alias(name, CANDIDATE, version)
        self.mlflow.set_tag("registered_model", f"{name}/{version}")
        return version


CANDIDATE, CHAMPION = "candidate", "champion"


def tag_model_version(name: str, version: str, tags: dict[str, str], cwd: Path | str = ".") -> None:
    client = _mlflow(cwd).MlflowClient()
    for k, v in tags.items():
        client.set_model_version_tag(name, str(version), k, str(v))


def expert_history(name: str, cwd: Path | str = ".") -> list[dict]:
    """Every finished run of expert `name`, oldest first: params, metrics, and the scores of the
    routed models (`bar-moe` versions) built from it."""
    mlflow = _mlflow(cwd)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(EXPERIMENT)
    query = f"tags.dvc_stage = 'train_expert@{name}' and attributes.status = 'FINISHED'"
    runs = client.search_runs([exp.experiment_id], query, order_by=["attributes.start_time ASC"])
    moe = client.search_model_versions("name = 'bar-moe'") if client.search_registered_models(
        "name = 'bar-moe'") else []
    out = []
    for run in runs:
        built = [v for v in moe if v.tags.get(f"expert.{name}.run_id") == run.info.run_id]
        routed = {k.removeprefix("eval."): float(v) for m in sorted(built, key=lambda v: int(v.version))[-1:]
                  for k, v in m.tags.items() if k.startswith("eval.")}
        out.append({"run_id": run.info.run_id, "version": run.data.tags.get("expert_version", "?"),
                    "params": run.data.params, "metrics": run.data.metrics, "routed": routed,
                    "moe_versions": sorted(int(v.version) for v in built)})
    return out


def model_version_with(name: str, tag: str, value: str, cwd: Path | str = "."):
    """The newest version of registered model `name` whose tag `tag` is `value` (or None)."""
    client = _mlflow(cwd).MlflowClient()
    if not client.search_registered_models(f"name = '{name}'"):
        return None
    found = client.search_model_versions(f"name = '{name}' and tags.{tag} = '{value}'")
    return max(found, key=lambda v: int(v.version), default=None)


@contextmanager
def stage_run(stage: str, *, spec: dict, tags: dict[str, str], cwd: Path | str = "."):
    """One MLflow run for one execution of a stage, named like the stage.

    Logs the resolved spec (as params and as `spec.json`), lineage tags and, on exit, wall
    and processor seconds. A stage that raises leaves its run FAILED.
    """
    mlflow = _mlflow(cwd)
    all_tags = {"stage": stage, "dvc_stage": stage, "git_commit": git_commit(cwd), **tags}
    parent = os.environ.get("BAR_PARENT_RUN_ID")
    # Leaving the `with` on an exception ends the run as FAILED.
    with mlflow.start_run(run_name=stage, tags=all_tags, parent_run_id=parent or None) as run:
        handle = StageRun(mlflow, run)
        mlflow.log_params(_flatten(spec))
        mlflow.log_dict(spec, "spec.json")
        try:
            yield handle
        finally:
            wall, cpu = time.time() - handle.started[0], _cpu_seconds() - handle.started[1]
            mlflow.log_metrics({"cost/wall_seconds": wall, "cost/cpu_seconds": cpu})
