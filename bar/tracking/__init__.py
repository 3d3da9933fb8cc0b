"""MLflow tracking; this package is the only importer of mlflow.

`runs`: what each stage (and each flow run) records in its MLflow run. `registry`: registered
models, aliases and the lineage and cost queries over runs. `store`: where the MLflow store is.
`dvc_files`: what DVC recorded in dvc.yaml and dvc.lock (output md5s, a stage's data inputs).

No stage lists this package among its DVC deps (tests/test_dvc_deps.py: LOGGING_ONLY): it records
runs, so changing how does not retrain models. dvc_files feeds lineage tags and MLflow inputs
only. The registry queries feed one output, evaluate's assembly cost (from the MLflow runs of the
routed model's components): its input is the MLflow store, which DVC does not track either.
"""

from bar.tracking.dvc_files import PIPELINES, dvc_md5, read_dvc_file, stage_inputs
from bar.tracking.registry import (
    CANDIDATE,
    CHAMPION,
    LINEAGE_TAGS,
    expert_history,
    model_lineage,
    model_version_by_alias,
    model_version_with,
    routed_lineage,
    routed_outcomes,
    scores,
    set_alias,
    stage_runs,
    tag_model_version,
)
from bar.tracking.runs import StageRun, git_commit, pipeline_run, stage_run
from bar.tracking.store import EXPERIMENT, _mlflow, repo_root, shown_uri, tracking_uri

__all__ = [
    "CANDIDATE",
    "CHAMPION",
    "EXPERIMENT",
    "LINEAGE_TAGS",
    "PIPELINES",
    "StageRun",
    "_mlflow",
    "dvc_md5",
    "expert_history",
    "git_commit",
    "model_lineage",
    "model_version_by_alias",
    "model_version_with",
    "pipeline_run",
    "read_dvc_file",
    "repo_root",
    "routed_lineage",
    "routed_outcomes",
    "scores",
    "set_alias",
    "stage_runs",
    "stage_inputs",
    "stage_run",
    "tag_model_version",
    "shown_uri",
    "tracking_uri",
]
