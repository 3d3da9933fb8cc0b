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
