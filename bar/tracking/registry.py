"""The model registry and the runs behind it: versions, aliases, lineage, each expert's history and the
run behind each stage's current outputs."""

from __future__ import annotations

import json
from pathlib import Path

from bar.tracking.store import EXPERIMENT, _mlflow

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


def routed_outcomes(version: int, cwd: Path | str = ".") -> tuple[str, dict[str, list[int]]] | None:
    """Whether `bar-moe` v`version` passed each held-out prompt ({domain: [1/0, ...]}, in the eval
    split's order), from outcomes.json of the newest finished `evaluate` run that scored it, with
    what chose those prompts (that run's `eval.*` spec and prepare_data's md5): two versions'
    outcomes pair up prompt by prompt only where it is the same. None without such a run."""
    import os
    import tempfile

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one small file per version
    mlflow = _mlflow(cwd)
    client = mlflow.MlflowClient()
    query = f"tags.dvc_stage = 'evaluate' and tags.moe_version = '{version}' and attributes.status = 'FINISHED'"
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None
    run = client.get_run(runs[0].info.run_id)
    inputs = {i.dataset.name: i.dataset.digest for i in run.inputs.dataset_inputs}
    prompts = {k: v for k, v in run.data.params.items() if k.startswith("eval.")}
    prompts["outputs/prepare_data"] = inputs.get("outputs/prepare_data")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run.info.run_id, "outcomes.json", tmp)
        except mlflow.exceptions.MlflowException:  # an evaluation from before outcomes were kept
            return None
        return json.dumps(prompts, sort_keys=True), json.loads(Path(path).read_text()).get("routed", {})


def stage_runs(cwd: Path | str = ".") -> dict[str, dict]:
    """The run that produced each stage's current outputs ({dvc stage: {run_id, commit, threads,
    started, cost}}): the newest finished run whose metrics agree with the stage's `metrics/` file
    (which DVC keeps with the outputs, so after a roll-back it is the older run's), else the newest."""
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
            newest[stage] = run
            if _agrees(run.data.metrics, files[stage]):
                agreeing[stage] = run
    return {
        stage: {
            "run_id": run.info.run_id,
            "commit": run.data.tags.get("git_commit", "unknown"),
            "threads": run.data.tags.get("threads_per_rank", "?"),
            "started": run.info.start_time / 1000,
            "cost": {k: v for k, v in run.data.metrics.items() if k.startswith("cost/")},
        }
        for stage, run in {**newest, **agreeing}.items()
    }


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
