"""The scheduled deployments, registered through the Prefect API (test harness server); the
bar-pipeline flow's scheduling on a pipeline of quick stages."""

import os
import shutil
import signal
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_nightly_deployment_has_its_cron_schedule(tmp_path):
    from prefect import get_client
    from prefect.testing.utilities import prefect_test_harness

    from flows.serve import NIGHTLY, deployments

    with prefect_test_harness(server_startup_timeout=120):
        for deployment in deployments(tmp_path):
            deployment.apply()
        with get_client(sync_client=True) as client:
            nightly = client.read_deployment_by_name("bar-pipeline/nightly")
            upgrade = client.read_deployment_by_name("upgrade-expert/upgrade")
    assert [s.schedule.cron for s in nightly.schedules] == [NIGHTLY]
    assert nightly.parameters == {"root": str(tmp_path.resolve())}
    assert upgrade.schedules == []


# A pipeline of quick stages in a real git + DVC repository: `prep`, then two `branch` stages
# that could run together (each sleeps, then records when it ran and on how many cores outside its
# output) into out/, then `join`, which reads out/ as a whole (as merge_experts reads
# outputs/train_expert).
# A branch fails while the file `fail_<item>` exists.
TOY = """
vars:
  - items: [a, b]
stages:
  prep:
    cmd: python -c "open('prep.txt', 'w').write('prepared')"
    outs: [prep.txt]
  branch:
    foreach: ${items}
    do:
      cmd: python toy.py ${item}
      deps: [prep.txt, toy.py]
      outs:
        - out/${item}
  join:
    cmd: python -c "open('join.txt', 'w').write(open('out/a/x').read() + open('out/b/x').read())"
    deps: [out]
    outs: [join.txt]
"""
BRANCH = """import os, sys, time
from pathlib import Path
item = sys.argv[1]
if Path(f"fail_{item}").exists():
    sys.exit(f"{item} fails")
start = time.time()
time.sleep(float(os.environ.get(f"TOY_SLEEP_{item}", {"a": 4, "b": 2}[item])))  # b, second in DAG order, finishes first
os.makedirs(f"out/{item}")
Path(f"out/{item}/x").write_text(item * 3)
with open(os.environ["TOY_TIMES"], "a") as f:
    f.write(f"{item} {start} {time.time()} {os.environ.get('BAR_CORES', 'all')}\\n")
"""


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def toy_repo(path):
    from conftest import run

    path.mkdir()
    (path / "dvc.yaml").write_text(TOY)
    (path / "toy.py").write_text(BRANCH)
    shutil.copy(ROOT / ".dvcignore", path)  # bar's: DVC's .gitignore files are not data
    run(["git", "init", "-q", "-b", "main"], path)
    run([sys.executable, "-m", "dvc", "init", "-q"], path)
    run(["git", "add", "-A"], path)
    run(["git", "commit", "-q", "-m", "toy"], path)
    return path


def test_the_flow_runs_ready_stages_side_by_side_and_commits_what_dvc_repro_would(tmp_path, monkeypatch, harness):
    import yaml

    from conftest import dvc
    from flows.pipeline import bar_pipeline

    times = tmp_path / "times.txt"
    monkeypatch.setenv("TOY_TIMES", str(times))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the flow shares the cores out: BAR_CORES
    serial, side = toy_repo(tmp_path / "serial"), toy_repo(tmp_path / "side")
    (side / "fail_b").touch()
    dvc(serial, "repro")
    with pytest.raises(RuntimeError, match="b fails"):
        bar_pipeline(root=str(side), max_parallel=2)
    # a's output is committed though b failed, and join never started.
    assert set(yaml.safe_load((side / "dvc.lock").read_text())["stages"]) == {"prep", "branch@a"}
    (side / "fail_b").unlink()
    times.write_text("")
    result = bar_pipeline(root=str(side), max_parallel=2)
    assert result["stages"] == {"prep": "Skipped", "branch@a": "Skipped", "branch@b": "Completed", "join": "Completed"}
    # Each stage's dvc.lock entry is the one `dvc repro` wrote in the serial twin, hashes and all.
    assert yaml.safe_load((side / "dvc.lock").read_text()) == yaml.safe_load((serial / "dvc.lock").read_text())
    assert dvc(side, "status").stdout.strip() == "Data and pipelines are up to date."
    assert times.read_text().split()[-1] == str(max(1, os.cpu_count() // 2))  # b's cores


def test_two_stages_whose_inputs_are_ready_run_at_the_same_time(tmp_path, monkeypatch, harness):
    """b starts with a and finishes first, unlike in serial `dvc repro`: dvc.lock still ends the same
    (the order DVC lists them in out/.gitignore is not part of out/'s hash: .dvcignore)."""
    import yaml

    from conftest import dvc
    from flows.pipeline import bar_pipeline

    times = tmp_path / "times.txt"
    monkeypatch.setenv("TOY_TIMES", str(times))
    serial, toy = toy_repo(tmp_path / "serial"), toy_repo(tmp_path / "toy")
    dvc(serial, "repro")
    times.write_text("")
    bar_pipeline(root=str(toy), max_parallel=2)
    (a_start, a_end), (b_start, b_end) = (
        tuple(map(float, line.split()[1:3])) for line in sorted(times.read_text().splitlines())
    )
    assert a_start < b_end and b_start < a_end, "the two branches overlapped"
    assert (toy / "out" / ".gitignore").read_text() != (serial / "out" / ".gitignore").read_text()
    assert yaml.safe_load((toy / "dvc.lock").read_text()) == yaml.safe_load((serial / "dvc.lock").read_text())


def test_a_free_slot_goes_to_the_stage_with_the_longest_chain_after_it(harness):
    """One slot; after prep both `short` and `long1` are ready: `long1` (a stage after it) goes
    first though `short` comes first in DAG order, as pretrain_base goes before the experts' data."""
    from prefect import flow, task

    from flows.pipeline import Plan, schedule

    started = []

    @task
    def stage(name: str) -> None:
        started.append(name)

    @flow
    def toy():
        upstream = {"prep": set(), "short": {"prep"}, "long1": {"prep"}, "long2": {"long1"}}
        return schedule(Plan(list(upstream), upstream, set(upstream)), 1, stage.submit)

    states, failed = toy()
    assert started == ["prep", "long1", "short", "long2"] and failed is None
    assert states == dict.fromkeys(["prep", "short", "long1", "long2"], "Completed")  # reported in DAG order


def test_a_command_line_run_sends_no_heartbeat_unless_asked(monkeypatch):
    from prefect.settings import get_current_settings

    from flows.pipeline import command_line

    monkeypatch.delenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", raising=False)
    assert get_current_settings().flows.heartbeat_frequency  # Prefect's default: on
    with command_line():
        assert get_current_settings().flows.heartbeat_frequency is None
    monkeypatch.setenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "60")
    with command_line():
        assert get_current_settings().flows.heartbeat_frequency


def test_the_command_line_asks_dvc_beside_the_prefect_import_and_hands_the_plan_over_once(tmp_path):
    from conftest import dvc
    from flows.todo import Prefetch, plan

    toy = toy_repo(tmp_path / "toy")
    dvc(toy, "repro", "prep")
    prefetch = Prefetch(["--root", str(toy), "--max-parallel", "2"])
    taken = prefetch.take(toy, ["dvc.yaml"])
    assert taken == plan(toy, ["dvc.yaml"]) and taken.needed == {"branch@a", "branch@b", "join"}  # as the flow asks
    assert prefetch.take(toy, ["dvc.yaml"]) is None  # once: the next run asks DVC again
    other = Prefetch(["--root", str(toy), "dvc.yaml:prep"])
    assert other.take(toy, ["dvc.yaml"]) is None  # not the run it was started for
    broken = Prefetch(["--root", str(tmp_path)])  # no DVC repository: the flow raises DVC's error itself
    assert broken.take(tmp_path, ["dvc.yaml"]) is None


def test_killing_the_flow_loses_no_finished_stage(tmp_path, monkeypatch, harness):
    """The flow's process group is killed (as a lost machine would be) after b finished, while a
    still runs: the next run keeps b and runs only a and what follows."""
    import subprocess
    import time

    import yaml
    from prefect.settings import PREFECT_API_URL

    from flows.pipeline import bar_pipeline

    monkeypatch.setenv("TOY_TIMES", str(tmp_path / "times.txt"))
    toy = toy_repo(tmp_path / "toy")
    env = os.environ | {"PREFECT_API_URL": PREFECT_API_URL.value(), "TOY_SLEEP_a": "600"}
    flow = subprocess.Popen(
        [sys.executable, "-m", "flows.pipeline", "--root", str(toy), "--max-parallel", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 180
    lock = toy / "dvc.lock"

    def committed() -> dict:
        # DVC rewrites dvc.lock in place: a read can catch it empty or half written.
        try:
            return (yaml.safe_load(lock.read_text()) or {}).get("stages", {}) if lock.exists() else {}
        except yaml.YAMLError:
            return {}

    while "branch@b" not in committed():
        assert flow.poll() is None and time.time() < deadline, "the flow never committed branch@b"
        time.sleep(0.2)
    os.killpg(flow.pid, signal.SIGKILL)
    flow.wait()
    assert set(yaml.safe_load(lock.read_text())["stages"]) == {"prep", "branch@b"}
    result = bar_pipeline(root=str(toy), max_parallel=2)
    assert result["stages"] == {"prep": "Skipped", "branch@a": "Completed", "branch@b": "Skipped", "join": "Completed"}
    assert (toy / "join.txt").read_text() == "aaabbb"


def test_a_worker_runs_the_deployed_pipeline_from_its_work_pool(tmp_path, monkeypatch):
    """`python -m flows.serve --pool` registers the deployments with a process work pool of a
    running Prefect server; `prefect worker start` picks the run up and runs it as a subprocess."""
    import subprocess

    import yaml

    from benchmarks.common import prefect_server
    from conftest import dvc, run

    monkeypatch.setenv("TOY_TIMES", str(tmp_path / "times.txt"))
    serial, toy = toy_repo(tmp_path / "serial"), toy_repo(tmp_path / "toy")
    dvc(serial, "repro")
    with prefect_server() as (api, env):
        env = env | {"PREFECT_WORKER_QUERY_SECONDS": "1"}
        registered = run([sys.executable, "-m", "flows.serve", "--root", str(toy), "--pool", "bar"], ROOT, env=env)
        assert "work pool 'bar'" in registered.stdout
        worker = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", "bar"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            ran = run(
                [sys.executable, "-m", "prefect", "deployment", "run", "bar-pipeline/nightly"]
                + ["-p", "max_parallel=2", "--watch", "--watch-timeout", "300"],
                tmp_path,
                env=env,
            )
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)
    assert "Completed" in ran.stdout, ran.stdout
    assert yaml.safe_load((toy / "dvc.lock").read_text()) == yaml.safe_load((serial / "dvc.lock").read_text())
