"""bar.tracking against a real SQLite MLflow store, and `mlflow ui` serving it on 127.0.0.1."""

import json
import subprocess
import sys
import urllib.error
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


def test_routed_outcomes_are_those_of_the_newest_evaluation_of_that_routed_model(tmp_path):
    """`bar compare` reads each routed model's outcomes per prompt back from the `evaluate` run
    that scored it (its outcomes.json artifact), with what chose the prompts: its eval spec."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    evaluations = [
        ("1", 2, [1, 0]),
        ("2", 2, [0, 0]),
        ("2", 2, [1, 1]),
        ("4", 3, [1, 1, 0]),
    ]  # v2 twice: the newest wins
    for version, num_examples, passed in evaluations:
        (tmp_path / "outcomes.json").write_text(json.dumps({"routed": {"code": passed}, "anchor": {"code": [0, 0]}}))
        with tracking.stage_run(
            "evaluate", spec={"eval": {"num_examples": num_examples}}, tags={}, cwd=tmp_path
        ) as run:
            run.set_tags({"moe_version": version})
            run.log_artifact(tmp_path / "outcomes.json")
    with tracking.stage_run("evaluate", spec={}, tags={}, cwd=tmp_path) as run:
        run.set_tags({"moe_version": "3"})  # an evaluation that kept no outcomes
    (one, first), (two, second) = tracking.routed_outcomes(1, tmp_path), tracking.routed_outcomes(2, tmp_path)
    assert first == {"code": [1, 0]} and second == {"code": [1, 1]} and one == two  # the same prompts
    four, fourth = tracking.routed_outcomes(4, tmp_path)
    assert fourth == {"code": [1, 1, 0]} and four != two  # another eval spec: other prompts
    assert tracking.routed_outcomes(3, tmp_path) is None and tracking.routed_outcomes(5, tmp_path) is None


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


@pytest.fixture(scope="module")
def team_server(tmp_path_factory):
    """`mlflow server --app-name basic-auth` on 127.0.0.1 with users `safety` and `code`, each
    allowed to write runs to the `bar` experiment (made by the admin) and to read the rest.
    Yields its URL and each user's password."""
    import secrets

    import mlflow
    from mlflow.server import get_app_client

    tmp = tmp_path_factory.mktemp("team_server")
    passwords = {user: secrets.token_urlsafe(12) for user in ("admin", "safety", "code")}
    config = tmp / "basic_auth.ini"
    config.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{tmp / 'auth.db'}\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_AUTH_CONFIG_PATH", str(config))
        env.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", passwords["admin"])  # read once, when the user store is made
        env.setenv("MLFLOW_FLASK_SERVER_SECRET_KEY", secrets.token_urlsafe(16))  # CSRF tokens of the UI's forms
        as_user(env, "admin", passwords)
        store = ["--backend-store-uri", f"sqlite:///{tmp / 'mlflow.db'}", "--artifacts-destination", str(tmp / "a")]
        with mlflow_server("--app-name", "basic-auth", *store) as url:
            admin = get_app_client("basic-auth", tracking_uri=url)
            experiment = mlflow.MlflowClient(url).create_experiment("bar")
            for user in ("safety", "code"):
                admin.create_user(user, passwords[user])
                admin.grant_user_permission(user, "experiment", experiment, "EDIT")
            yield url, passwords, tmp


def as_user(env, user: str, passwords: dict[str, str]) -> None:
    """Credentials the way MLflow reads them (bar reads none of its own)."""
    env.setenv("MLFLOW_TRACKING_USERNAME", user)
    env.setenv("MLFLOW_TRACKING_PASSWORD", passwords[user])


def test_the_team_server_refuses_a_request_without_credentials(team_server):
    url, _, _ = team_server
    with pytest.raises(urllib.error.HTTPError) as refused:
        api(url, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=bar")
    assert refused.value.code == 401


def test_a_team_cannot_move_another_teams_champion(team_server, tmp_path, monkeypatch):
    """Each team registers its own expert through bar's stage runs; the code team reads the
    safety team's expert but may not move its `champion` alias. No password lands in the store."""
    import mlflow
    from mlflow.exceptions import MlflowException

    url, passwords, server_dir = team_server
    monkeypatch.setenv("BAR_TRACKING_URI", url)
    versions = {}
    for team in ("safety", "code"):
        as_user(monkeypatch, team, passwords)
        folder = tmp_path / team
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        with tracking.stage_run(f"train_expert@{team}", spec={"lr": 0.1}, tags={"expert": team}, cwd=tmp_path) as run:
            versions[team] = run.register_model(f"bar-expert-{team}", folder, {"expert_version": 1})
        mlflow.MlflowClient(url).set_registered_model_alias(f"bar-expert-{team}", "champion", versions[team])

    client = mlflow.MlflowClient(url)  # as the code team, the last one above
    assert client.get_model_version_by_alias("bar-expert-safety", "champion").version == versions["safety"]
    with pytest.raises(MlflowException, match="PERMISSION_DENIED|Permission denied"):
        client.set_registered_model_alias("bar-expert-safety", "champion", versions["safety"])
    with pytest.raises(MlflowException, match="PERMISSION_DENIED|Permission denied"):
        client.delete_registered_model_alias("bar-expert-safety", "champion")
    as_user(monkeypatch, "safety", passwords)
    client.set_registered_model_alias("bar-expert-safety", "champion", versions["safety"])  # its own: allowed

    stored = b"".join(p.read_bytes() for p in [*server_dir.rglob("*"), *tmp_path.rglob("*")] if p.is_file())
    assert not any(password.encode() in stored for password in passwords.values())


def test_messages_show_the_tracking_uri_without_its_password(monkeypatch):
    monkeypatch.setenv("BAR_TRACKING_URI", "https://safety:s3cret@mlflow.example.org:8443/base")
    assert tracking.shown_uri() == "https://mlflow.example.org:8443/base"
    monkeypatch.setenv("BAR_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.shown_uri() == "http://127.0.0.1:5000"


def _log_same_datasets(uri, barrier, rounds, errors):
    import mlflow
    from mlflow.data.http_dataset_source import HTTPDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    from bar.tracking.runs import log_input

    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("race")
    with mlflow.start_run():
        for r in range(rounds):
            barrier.wait()
            try:
                log_input(
                    mlflow, MetaDataset(HTTPDatasetSource(f"http://data/{r}"), name=f"d{r}", digest=f"m{r}"), "training"
                )
            except Exception as e:  # noqa: BLE001 - counted, then asserted on
                errors.put(repr(e))


def test_stages_logging_one_dataset_at_once_all_succeed(tmp_path):
    """Experts run in parallel log the same anchor as their input; MLflow's store looks a dataset
    up, then inserts it, so without a retry some of them fail (a CI run lost one this way)."""
    import multiprocessing

    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("race")
    ctx = multiprocessing.get_context("spawn")
    barrier, errors, rounds = ctx.Barrier(4), ctx.Queue(), 12
    procs = [ctx.Process(target=_log_same_datasets, args=(uri, barrier, rounds, errors)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0] * 4
    assert errors.empty(), errors.get()
    runs = mlflow.search_runs(experiment_names=["race"], output_format="list")
    assert [len(r.inputs.dataset_inputs) for r in runs] == [rounds] * 4
