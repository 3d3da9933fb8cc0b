"""What plain `dvc status` and `dvc metrics show` show of a fresh checkout: the main pipeline, and
the opt-in baselines only once params.yaml lists them (real DVC, nothing run)."""

import json

from conftest import dvc, make_project, run, set_params


def shown(project) -> tuple[set[str], set[str]]:
    """(stages `dvc status` names, metrics files `dvc metrics show` declares)."""
    status = json.loads(dvc(project, "status", "--json").stdout)
    metrics = json.loads(dvc(project, "metrics", "show", "--json").stdout)[""]["data"]
    return set(status), set(metrics)


def test_baselines_show_in_dvc_status_and_metrics_only_once_listed(tmp_path):
    project = make_project(tmp_path / "project")
    stages, metrics = shown(project)
    assert "evaluate" in stages and "metrics/evaluate.json" in metrics
    assert not [s for s in stages if s.startswith("baselines/")] and not [m for m in metrics if "baseline" in m]
    set_params(project, baselines=["monolithic", "math_ffn_only"])
    stages, metrics = shown(project)
    assert {"baselines/dvc.yaml:baseline@monolithic", "baselines/dvc.yaml:baseline@math_ffn_only"} <= stages
    assert {"metrics/baseline/monolithic.json", "metrics/baseline/math_ffn_only.json"} <= metrics


def test_git_versions_the_metrics_and_ignores_what_dvc_plots_show_renders(tmp_path):
    project = make_project(tmp_path / "project")
    for name in ("metrics/evaluate.json", "dvc_plots/index.html"):
        (project / name).parent.mkdir()
        (project / name).write_text("{}")
    untracked = run(["git", "status", "--porcelain", "--untracked-files=all"], project).stdout
    assert untracked.splitlines() == ["?? metrics/evaluate.json"]
