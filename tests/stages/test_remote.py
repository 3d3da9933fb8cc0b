"""Teams on one remote: a DVC remote (a local directory) and an MLflow tracking server shared by
separate checkouts. A team trains its expert in its own clone and pushes it; the integrator
pulls, and `dvc repro` re-runs only the assembly, with the team's run as a component of the new
routed model on the shared server."""

import json
import re
import sys

import pytest

from conftest import dvc, edit_yaml, make_project, mlflow_server, quick, run, set_params

pytestmark = pytest.mark.slow
ASSEMBLY = ["merge_experts", "fit_router", "evaluate"]


def ran(proc) -> list[str]:
    """The stages a `dvc repro` ran, in order (it prints "Running stage '<name>':")."""
    return re.findall(r"Running stage '([^']+)'", proc.stdout)


def commit(project, message: str) -> None:
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-q", "-m", message], project)


def test_a_team_pushes_its_expert_and_the_integrator_rebuilds_only_the_assembly(tmp_path, monkeypatch):
    import mlflow

    server = ["--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}"]
    with mlflow_server(*server, "--artifacts-destination", str(tmp_path / "artifacts")) as url:
        monkeypatch.setenv("BAR_TRACKING_URI", url)  # every checkout logs to the shared server
        integrator = make_project(tmp_path / "integrator")
        quick(integrator)
        set_params(integrator, experts=["code", "safety"])  # two teams are enough
        dvc(integrator, "remote", "add", "-d", "shared", str(tmp_path / "dvc-remote"))
        commit(integrator, "the shared DVC remote")
        dvc(integrator, "repro")
        commit(integrator, "the pipeline's results")
        dvc(integrator, "push")

        # The safety team: its own clone, its data from the remote, a new version of its expert.
        team = tmp_path / "safety-team"
        run(["git", "clone", "-q", str(integrator), str(team)], tmp_path)
        dvc(team, "pull")
        spec = team / "specs" / "experts" / "safety.yaml"
        edit_yaml(spec, "version", 2)
        edit_yaml(spec, "phases.sft.optim.lr", 2.0e-3)
        trained = dvc(team, "repro", "train_expert@safety")
        assert "train_expert@safety" in ran(trained) and set(ran(trained)) <= {"mix_data@safety", "train_expert@safety"}
        commit(team, "safety v2")
        dvc(team, "push")

        run(["git", "pull", "-q", "--no-rebase", str(team), "main"], integrator)
        dvc(integrator, "pull")
        status = json.loads(dvc(integrator, "status", "--json").stdout)
        # The expert came from the remote up to date: what changed is the assembly's input.
        assert "merge_experts" in status and set(status) <= set(ASSEMBLY), status
        assert ran(dvc(integrator, "repro")) == ASSEMBLY

        client = mlflow.MlflowClient(url)
        experiment = client.get_experiment_by_name("bar").experiment_id
        safety = client.search_runs([experiment], "tags.mlflow.runName = 'train_expert@safety'")
        v2 = next(r for r in safety if r.data.tags["expert_version"] == "2")  # the team's run
        assert len(safety) == 2 and v2.data.tags["parent_expert_version"] == "1"
        moe = max(client.search_model_versions("name = 'bar-moe'"), key=lambda v: int(v.version))
        assert moe.version == "2" and moe.tags["expert.safety.run_id"] == v2.info.run_id
        assert moe.tags["components"] == "code:v1,safety:v2"
        expert = client.get_model_version_by_alias("bar-expert-safety", "candidate")
        assert expert.version == "2" and expert.run_id == v2.info.run_id

        bar = [sys.executable, "-m", "bar.cli"]
        compared = run([*bar, "compare", "safety"], integrator).stdout
        assert f"v2 {v2.info.run_id[:8]}" in compared and "v1 " in compared, compared  # both versions
        assert re.search(r"spec \S*phases\.sft\.optim\.lr +0\.001 +0\.002", compared), compared
        # v2's routed score against v1's, from the evaluations' outcomes kept on the server.
        assert re.search(r"routed safety vs previous +- +[+-]\d+\.\d±\d+\.\d\n", compared), compared
        lineage = run([*bar, "lineage", moe.version], integrator).stdout
        assert "expert safety (bar-expert-safety v2)" in lineage and v2.info.run_id in lineage
