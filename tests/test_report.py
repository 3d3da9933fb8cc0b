"""bar.report against a real SQLite MLflow store."""

from types import SimpleNamespace

from bar import report, tracking


def test_upgrade_table_has_one_row_per_version_from_its_newest_run(tmp_path):
    # code v1, then v2, then v1 trained again (its spec changed): the table compares the
    # routed models of v1's newest run and of v2, and names the runs.
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    runs = []
    for version, score in ((1, 30.0), (2, 90.0), (1, 95.0)):
        with tracking.stage_run(
            "train_expert@code", spec={}, tags={"expert": "code", "expert_version": str(version)}, cwd=tmp_path
        ) as run:
            runs.append(run.run_id)
        with tracking.stage_run("fit_router", spec={}, tags={}, cwd=tmp_path) as run:
            run.register_model("bar-moe", tmp_path / "model", {"expert.code.run_id": runs[-1], "eval.code": score})
    specs = SimpleNamespace(params=SimpleNamespace(experts=["code"]))
    assert report.upgrades(tmp_path, specs, ["code"]) == {
        f"code v1 ({runs[2][:8]})": {"code": 95.0},
        f"code v2 ({runs[1][:8]})": {"code": 90.0},
    }


def evaluated_checkout(root, preset: str):
    """Specs at `preset` with one expert, its evaluation's scores, a committed report and a README."""
    import json
    import shutil

    from conftest import ROOT, set_params

    shutil.copytree(ROOT / "specs", root / "specs")
    shutil.copy(ROOT / "params.yaml", root)
    set_params(root, preset=preset, experts=["math"], baselines=[])
    scores = {"math": 50.0, "general": 40.0, "overall": 45.0}
    rows = {"anchor": scores, "expert:math": scores, "merged": scores, "routed": scores}
    (root / "metrics").mkdir()
    (root / "metrics" / "evaluate.json").write_text(json.dumps(rows))
    (root / "reports").mkdir()
    (root / "reports" / "report.md").write_text("the README run's report\n")
    (root / "README.md").write_text(f"# p\n\n{report.README_START}\nold\n{report.README_END}\n")


def test_a_report_of_another_preset_leaves_the_readme_runs_report_alone(tmp_path, capsys):
    from bar.cli import main

    evaluated_checkout(tmp_path, "tiny")
    assert main(["report", "--readme", "--root", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'params.yaml'}: preset = 'tiny': the README's table is the default preset's run; run "
        "`bar report` without --readme (it writes reports/tiny/report.md), or --readme at preset: default\n"
    )
    assert not (tmp_path / "reports" / "tiny").exists() and "old" in (tmp_path / "README.md").read_text()
    assert main(["report", "--root", str(tmp_path)]) == 0
    assert "preset `tiny`" in (tmp_path / "reports" / "tiny" / "report.md").read_text()
    assert (tmp_path / "reports" / "report.md").read_text() == "the README run's report\n"
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["report.md", "tiny"]


def test_the_default_presets_report_is_reports_and_the_readme_table(tmp_path):
    import subprocess

    from bar.cli import main

    evaluated_checkout(tmp_path, "default")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "c"], check=True)
    with tracking.stage_run("evaluate", spec={}, tags={}, cwd=tmp_path) as run:
        run.log_metrics({"routed/math": 50.0})
    commit = tracking.git_commit(tmp_path)[:7]
    assert main(["report", "--readme", "--root", str(tmp_path)]) == 0
    written = (tmp_path / "reports" / "report.md").read_text()
    assert "preset `default`" in written and f"| evaluate | `{run.run_id}` | `{commit}" in written
    readme = (tmp_path / "README.md").read_text()
    assert "old" not in readme and "| expert math | 40.0 | 50.0 | 45.0 |" in readme
    assert f"Stage runs at commit `{commit}`" in readme and f"`evaluate` is MLflow run `{run.run_id}`" in readme
    from bar.specs import Specs

    assert (
        f"precision `{Specs(tmp_path).model.precision}`" in readme
        and "[reports/report.md](reports/report.md)" in readme
    )
