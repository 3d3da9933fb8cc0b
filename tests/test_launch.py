"""bar.launch: where a stage's workers run, and the threads each rank computes with."""

import os

import pytest


def test_threads_per_rank_shares_the_cores_unless_omp_num_threads_says(monkeypatch):
    from bar.launch import threads_per_rank

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert [threads_per_rank(n) for n in (1, 2, 3, 16)] == [8, 4, 2, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads_per_rank(2) == 3


def test_a_stage_of_one_process_runs_its_worker_itself_and_more_go_to_torchrun(monkeypatch):
    from bar.launch import run_workers

    monkeypatch.delenv("BAR_NNODES", raising=False)
    ran = []
    run_workers("bar.no_such_stage", 1, ["--worker"], lambda: ran.append("here"))  # torchrun would fail on it
    assert ran == ["here"]
    with pytest.raises(SystemExit, match="bar.no_such_stage: torchrun workers failed"):
        run_workers("bar.no_such_stage", 2, ["--worker"], lambda: ran.append("here again"))
    assert ran == ["here"]


def test_several_nodes_share_the_processes_and_bad_settings_fail_naming_the_variable(monkeypatch):
    from bar.launch import Nodes, command

    monkeypatch.setenv("BAR_NNODES", "2")
    monkeypatch.setenv("BAR_NODE_RANK", "1")
    monkeypatch.setenv("BAR_RDZV_ENDPOINT", "node0:29500")
    cmd = command("bar.stages.train_anchor", 8, ["--worker"], Nodes.from_env())
    assert "--nnodes=2" in cmd and "--node-rank=1" in cmd and "--rdzv-endpoint=node0:29500" in cmd
    assert "--nproc-per-node=4" in cmd and "--standalone" not in cmd
    with pytest.raises(SystemExit, match="BAR_NNODES = 2: must divide the stage's 3 processes"):
        Nodes.from_env().per_node(3)
    monkeypatch.delenv("BAR_RDZV_ENDPOINT")
    with pytest.raises(SystemExit, match="BAR_NNODES = 2 needs BAR_RDZV_ENDPOINT"):
        Nodes.from_env()
    monkeypatch.setenv("BAR_NODE_RANK", "2")
    with pytest.raises(SystemExit, match="BAR_NODE_RANK = 2: must be below BAR_NNODES = 2"):
        Nodes.from_env()
    monkeypatch.setenv("BAR_NNODES", "two")
    with pytest.raises(SystemExit, match="BAR_NNODES = 'two': must be an integer >= 1"):
        Nodes.from_env()
    for key in ("BAR_NNODES", "BAR_NODE_RANK"):
        monkeypatch.delenv(key)
    assert "--standalone" in command("m", 2, [], Nodes.from_env())


def test_a_node_other_than_the_first_starts_an_experts_workers_as_its_spec_lays_them_out(tmp_path):
    """`python -m bar.launch train_expert <expert>`: tp_size x dp_size of the expert's spec; the
    expert is asked for by name, and only train_expert takes one."""
    import shutil

    from bar.launch import main, workers
    from bar.specs import Specs
    from conftest import ROOT, edit_yaml

    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    shutil.copy(ROOT / "params.yaml", tmp_path)
    edit_yaml(tmp_path / "specs" / "experts" / "math.yaml", "tp_size", 2)
    edit_yaml(tmp_path / "specs" / "experts" / "math.yaml", "dp_size", 2)
    specs = Specs(tmp_path)
    assert workers(specs, "train_expert", "math") == ("bar.stages.train_expert", 4, ["math", "--worker"])
    assert workers(specs, "fit_router") == ("bar.stages.fit_router", 1, ["--worker"])
    for argv in (["train_expert"], ["fit_router", "math"]):
        with pytest.raises(SystemExit):
            main(argv)
