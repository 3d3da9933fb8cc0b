"""The scheduled deployments, registered through the Prefect API (test harness server); the
bar-pipeline flow's scheduling on a pipeline of quick stages."""

import os
import shutil
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
time.sleep({"a": 4, "b": 2}[item])  # b, second in DAG order, finishes first
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
