"""Where runs are recorded: the MLflow store of the repository (the only module that imports mlflow
is this package, and only here).

The store is SQLite inside the repository's `mlruns/` with an absolute URI (MLflow 3's file
store is deprecated and has no model registry). `dvc exp run --temp/--queue` runs stages in
a copy of the repository under `<repo>/.dvc/tmp/exps/`: runs from there are recorded in the
original repository's store, not in the copy that is thrown away. `BAR_TRACKING_URI`
overrides all of this (e.g. a shared tracking server).
"""

from __future__ import annotations

import os
from pathlib import Path

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


def shown_uri(cwd: Path | str = ".") -> str:
    """The tracking URI as messages show it: without a user or password written into it."""
    from urllib.parse import urlsplit

    uri = tracking_uri(cwd)
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


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
