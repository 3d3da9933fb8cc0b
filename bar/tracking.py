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
import warnings
from contextlib import contextmanager
from pathlib import Path

import yaml

EXPERIMENT = "bar"


def repo_root(cwd: Path | str = ".") -> Path:
    """The repository whose `mlruns/` records this run (the original one for DVC temp experiments)."""
    path = Path(cwd).resolve()
    parts = path.parts
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
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
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (out.stdout.strip() or "unknown") + ("-dirty" if dirty else "")


def read_dvc_file(path: Path) -> dict:
    """A DVC file (dvc.yaml, dvc.lock) as data; libyaml's loader when present (dvc.lock runs to
    thousands of lines and a stage reads it several times)."""
    return yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}


def _lock_outs(cwd: Path | str) -> dict[str, str]:
    """{output path: md5} of every stage output DVC recorded in dvc.lock."""
    lock = Path(cwd) / "dvc.lock"
    if not lock.exists():
        return {}
    return {
        out["path"]: out.get("md5", "unknown")
        for stage in read_dvc_file(lock).get("stages", {}).values()
        for out in stage.get("outs", [])
        if "path" in out
    }


def _md5_of(path: str, outs: dict[str, str]) -> str:
    return next((md5 for out, md5 in outs.items() if path == out or path.startswith(out + "/")), "unknown")


def dvc_md5(path: str, cwd: Path | str = ".") -> str:
    """The md5 DVC recorded in dvc.lock for the output holding `path` (the output itself or a
    folder containing it): how DVC versions that data."""
    return _md5_of(path, _lock_outs(cwd))


PIPELINES = ("dvc.yaml", "baselines/dvc.yaml")  # the main pipeline and the opt-in baselines


def stage_inputs(stage: str, cwd: Path | str = ".") -> dict[str, str]:
    """The data a DVC stage reads (its `outputs/...` deps in dvc.yaml) and DVC's md5 of each; a
    folder dep holding several stages' outputs stands for each of them."""
    base, _, item = stage.partition("@")
    definition = {}
    for name in PIPELINES:
        path = Path(cwd) / name
        if path.exists():
            definition = definition or read_dvc_file(path).get("stages", {}).get(base, {})
    deps = definition.get("do", definition).get("deps", [])
    deps = [d.replace("${item}", item) for d in deps if isinstance(d, str) and d.startswith("outputs/")]
    outs, inputs = _lock_outs(cwd), {}
    for d in deps:
        inside = {out: md5 for out, md5 in outs.items() if out.startswith(d + "/")}
        inputs |= inside or {d: _md5_of(d, outs)}
    return inputs


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


CANDIDATE, CHAMPION = "candidate", "champion"


def tag_model_version(name: str, version: str, tags: dict[str, str], cwd: Path | str = ".") -> None:
    client = _mlflow(cwd).MlflowClient()
    for k, v in tags.items():
        client.set_model_version_tag(name, str(version), k, str(v))


def _versions(client, name: str, where: str = "") -> list:
    """Versions of registered model `name` (matching `where`), oldest first; [] if there is none."""
    if not client.search_registered_models(f"name = '{name}'"):
        return []
    found = client.search_model_versions(f"name = '{name}'" + (f" and {where}" if where else ""))
    return sorted(found, key=lambda v: int(v.version))


def expert_history(name: str, cwd: Path | str = ".") -> list[dict]:
    """Every finished run of expert `name`, oldest first: params, metrics, and the scores of the
    routed models (`bar-moe` versions) built from it."""
    mlflow = _mlflow(cwd)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(EXPERIMENT)
    query = f"tags.dvc_stage = 'train_expert@{name}' and attributes.status = 'FINISHED'"
    runs = client.search_runs([exp.experiment_id], query, order_by=["attributes.start_time ASC"])
    moe = _versions(client, "bar-moe")
    out = []
    for run in runs:
        built = [v for v in moe if v.tags.get(f"expert.{name}.run_id") == run.info.run_id]
        routed = scores(built[-1]) if built else {}  # the newest routed model built from this run
        out.append(
            {
                "run_id": run.info.run_id,
                "version": run.data.tags.get("expert_version", "?"),
                "threads": run.data.tags.get("threads_per_rank", "?"),
                "params": run.data.params,
                "metrics": run.data.metrics,
                "routed": routed,
                "moe_versions": [int(v.version) for v in built],
            }
        )
    return out


def stage_costs(cwd: Path | str = ".") -> dict[str, dict[str, float]]:
    """The cost/* metrics of the run that produced each stage's current outputs ({dvc stage: metrics}):
    the newest finished run whose metrics agree with the stage's `metrics/` file (which DVC keeps
    with the outputs, so after a roll-back it is the older run's), else the newest finished run."""
    mlflow = _mlflow(cwd)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return {}
    newest, agreeing, files = {}, {}, {}
    for run in client.search_runs(
        [exp.experiment_id], "attributes.status = 'FINISHED'", order_by=["attributes.start_time ASC"]
    ):
        stage = run.data.tags.get("dvc_stage")
        if stage:
            if stage not in files:
                files[stage] = _stage_metrics(cwd, stage)
            newest[stage] = run.data.metrics
            if _agrees(run.data.metrics, files[stage]):
                agreeing[stage] = run.data.metrics
    return {stage: {k: v for k, v in m.items() if k.startswith("cost/")} for stage, m in {**newest, **agreeing}.items()}


def _stage_metrics(cwd: Path | str, stage: str) -> dict:
    path = Path(cwd) / "metrics" / f"{stage.replace('@', '/')}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _agrees(logged: dict, metrics: dict) -> bool:
    """Every number of a stage's metrics file that the run logged has the value the run logged."""
    return all(
        abs(logged[k] - v) <= 1e-9 * max(1.0, abs(v))
        for k, v in metrics.items()
        if k in logged and isinstance(v, (int, float))
    )


LINEAGE_TAGS = (
    "dvc_stage",
    "expert_version",
    "spec_hash",
    "data_hash",
    "anchor_hash",
    "base_hash",
    "parent_expert_version",
    "parent_model_version",
    "git_commit",
    "threads_per_rank",
)


def _run_lineage(client, run_id: str) -> dict:
    run = client.get_run(run_id)
    return {
        "run_id": run_id,
        "status": run.info.status,
        "tags": {k: run.data.tags[k] for k in LINEAGE_TAGS if k in run.data.tags},
        "inputs": {i.dataset.name: i.dataset.digest for i in run.inputs.dataset_inputs},
        "cost": {k: v for k, v in run.data.metrics.items() if k.startswith("cost/")},
    }


def model_lineage(name: str, version: str, cwd: Path | str = ".") -> dict:
    """What a registered model version was built from: its run (lineage tags, input datasets,
    cost), for a routed model each component expert's run, and the evaluation of it."""
    mlflow = _mlflow(cwd)
    client = mlflow.MlflowClient()
    try:
        v = client.get_model_version(name, str(version))
    except mlflow.exceptions.MlflowException as e:
        raise LookupError(str(e).splitlines()[0]) from None
    out = {
        "name": name,
        "version": v.version,
        "aliases": list(v.aliases),
        "tags": dict(v.tags),
        "run": _run_lineage(client, v.run_id),
        "components": {},
        "evaluation": None,
    }
    for key, run_id in sorted(v.tags.items()):
        if key.startswith("expert.") and key.endswith(".run_id") and run_id != "unregistered":
            out["components"][key.split(".")[1]] = _run_lineage(client, run_id)
    if name != "bar-moe":
        return out
    exp = client.get_experiment_by_name(EXPERIMENT)
    evals = client.search_runs(
        [exp.experiment_id],
        f"tags.dvc_stage = 'evaluate' and tags.moe_version = '{v.version}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if evals:
        run = evals[0]
        out["evaluation"] = {
            "run_id": run.info.run_id,
            "rerun": run.data.tags.get("assembly.rerun", ""),
            **{k: val for k, val in run.data.metrics.items() if k.startswith(("routed/", "assembly/"))},
        }
    return out


def model_version_by_alias(name: str, alias: str, cwd: Path | str = "."):
    """The version of registered model `name` that `alias` points at (or None)."""
    mlflow = _mlflow(cwd)
    try:
        return mlflow.MlflowClient().get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        return None


def set_alias(name: str, alias: str, version: str, cwd: Path | str = ".") -> None:
    _mlflow(cwd).MlflowClient().set_registered_model_alias(name, alias, str(version))


def scores(version) -> dict[str, float]:
    """The held-out scores `evaluate` tagged on a `bar-moe` version ({domain: pass rate})."""
    return {k.removeprefix("eval."): float(v) for k, v in version.tags.items() if k.startswith("eval.")}


def model_version_with(name: str, tag: str, value: str, cwd: Path | str = "."):
    """The newest version of registered model `name` whose tag `tag` is `value` (or None)."""
    found = _versions(_mlflow(cwd).MlflowClient(), name, f"tags.{tag} = '{value}'")
    return found[-1] if found else None


def _log_inputs(mlflow, stage: str, cwd: Path | str) -> None:
    """Each DVC data input of the stage as an MLflow dataset: name = path, digest = DVC's md5."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    context = "evaluation" if stage == "evaluate" else "training"
    for path, md5 in stage_inputs(stage, cwd).items():
        with warnings.catch_warnings():  # a file URI matches two equivalent local source types
            warnings.simplefilter("ignore")
            source = resolve_dataset_source((repo_root(cwd) / path).as_uri())
        mlflow.log_input(MetaDataset(source, name=path, digest=md5), context=context)


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


def routed_lineage(version: str, cwd: Path | str = ".") -> dict:
    """The training runs `bar-moe` version `version` was built from, each as {"run_id", "metrics"}:
    {"anchor": ..., "experts": {name: ...}, "router": ...}, plus "previous": the same for the
    version before it (None for the first). The experts and router come from the version's
    tags; the anchor is the newest finished `train_anchor` run before the router was fitted."""
    client = _mlflow(cwd).MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id

    def part(run) -> dict:
        return {"run_id": run.info.run_id, "metrics": run.data.metrics} if run else {"run_id": None, "metrics": {}}

    def lineage(v) -> dict:
        router = client.get_run(v.run_id)
        names = [c.split(":")[0] for c in v.tags.get("components", "").split(",") if c]
        anchors = client.search_runs(
            [experiment],
            "tags.dvc_stage = 'train_anchor' and "
            f"attributes.status = 'FINISHED' and attributes.start_time < "
            f"{router.info.start_time}",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        experts = {}
        for e in names:
            run_id = v.tags.get(f"expert.{e}.run_id")
            run = client.get_run(run_id) if run_id and run_id != "unregistered" else None
            experts[e] = {"run_id": run_id, "metrics": run.data.metrics if run else {}}
        return {
            "version": v.version,
            "anchor": part(anchors[0] if anchors else None),
            "router": part(router),
            "experts": experts,
        }

    current = client.get_model_version("bar-moe", str(version))
    older = [v for v in _versions(client, "bar-moe") if int(v.version) < int(version)]
    previous = older[-1] if older else None
    return lineage(current) | {"previous": lineage(previous) if previous else None}


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
