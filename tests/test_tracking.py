"""bar.tracking against a real SQLite MLflow store, and `mlflow ui` serving it on 127.0.0.1."""

import json
import subprocess
import sys
import urllib.request

import pytest
import yaml

from bar import tracking
from bar.launch import threads_per_rank
from conftest import mlflow_server


def test_stage_inputs_come_from_dvc_yaml_with_dvc_md5(tmp_path):
    (tmp_path / "dvc.yaml").write_text(
        yaml.safe_dump(
            {
                "stages": {
                    "train_expert": {
                        "foreach": ["math"],
                        "do": {
                            "cmd": "x",
                            "deps": [
                                "bar/stages/train_expert.py",
                                "outputs/mix_data/${item}",
                                "outputs/train_anchor/model.safetensors",
                            ],
                        },
                    },
                    "evaluate": {"cmd": "y", "deps": ["outputs/fit_router"]},
                }
            }
        )
    )
    (tmp_path / "dvc.lock").write_text(
        yaml.safe_dump(
            {
                "schema": "2.0",
                "stages": {
                    "mix_data@math": {"outs": [{"path": "outputs/mix_data/math", "md5": "aaa.dir"}]},
                    "train_anchor": {"outs": [{"path": "outputs/train_anchor", "md5": "bbb.dir"}]},
                },
            }
        )
    )
    assert tracking.stage_inputs("train_expert@math", tmp_path) == {
        "outputs/mix_data/math": "aaa.dir",
        "outputs/train_anchor/model.safetensors": "bbb.dir",
    }
    assert tracking.stage_inputs("evaluate", tmp_path) == {"outputs/fit_router": "unknown"}


def test_stage_runs_are_the_runs_that_made_the_current_outputs(tmp_path):
    """After an upgrade rolled back, the cost of a stage is its older run's: the one whose
    metrics agree with the stage's metrics file, which DVC restores with the outputs; each names
    the commit it ran at."""
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "c"], check=True)
    for flops, score in ((10.0, 38.5), (25.0, 98.5)):  # v1, then v2
        with tracking.stage_run("train_expert@code", spec={}, tags={}, cwd=tmp_path) as run:
            run.log_metrics({"cost/flops": flops, "eval/code": score})
    assert tracking.stage_runs(tmp_path)["train_expert@code"]["cost"]["cost/flops"] == 25.0  # no metrics file: newest
    (tmp_path / "metrics" / "train_expert").mkdir(parents=True)
    (tmp_path / "metrics" / "train_expert" / "code.json").write_text(json.dumps({"cost/flops": 10, "eval/code": 38.5}))
    run = tracking.stage_runs(tmp_path)["train_expert@code"]
    assert run["cost"]["cost/flops"] == 10.0 and run["cost"]["cost/wall_seconds"] > 0
    assert (
        len(run["commit"]) == 40
        and run["commit"] == tracking.git_commit(tmp_path)
        and run["threads"] == str(threads_per_rank(1))
    )
    (tmp_path / "metrics" / "train_expert" / "code.json").write_text(json.dumps({"cost/flops": 10, "eval/code": 50}))
    assert tracking.stage_runs(tmp_path)["train_expert@code"]["cost"]["cost/flops"] == 25.0  # none agrees: newest


def api(url: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{url}{path}",
        method="POST" if body else "GET",
        data=json.dumps(body).encode() if body else None,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.mark.slow
def test_mlflow_ui_on_localhost_shows_the_runs_and_models(tmp_path):
    for stage in ("train_anchor", "train_expert@code"):
        with tracking.stage_run(
            stage, spec={"lr": 0.1}, tags={"expert": "code"} if "@" in stage else {}, cwd=tmp_path
        ) as run:
            run.log_metrics({"eval/code": 12.5})
            if "@" in stage:
                (tmp_path / "model").mkdir()
                (tmp_path / "model" / "config.json").write_text("{}")
                run.register_model("bar-expert-code", tmp_path / "model", {"expert_version": 1})

    with mlflow_server("--backend-store-uri", tracking.tracking_uri(tmp_path), command="ui") as url:
        experiment = api(url, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=bar")["experiment"]
        runs = api(url, "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
        assert sorted(r["info"]["run_name"] for r in runs) == ["train_anchor", "train_expert@code"]
        code = next(r for r in runs if r["info"]["run_name"] == "train_expert@code")
        assert {"key": "eval/code", "value": 12.5} in [
            {k: m[k] for k in ("key", "value")} for m in code["data"]["metrics"]
        ]
        version = api(url, "/api/2.0/mlflow/registered-models/alias?name=bar-expert-code&alias=candidate")
        assert version["model_version"]["run_id"] == code["info"]["run_id"]


def test_mlflow_is_imported_by_bar_tracking_only():
    """The tracking package is the one MLflow importer of bar and its flows (lazily: importing it is cheap)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    importers = set()
    for path in [*(root / "bar").rglob("*.py"), *(root / "flows").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            if any(n.split(".")[0] == "mlflow" for n in names):
                importers.add(path.relative_to(root).parts[:2])
    assert importers == {("bar", "tracking")}
    code = "import sys, bar.tracking; print('mlflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
