"""Tensor and data parallelism, several nodes and resuming, through real torchrun workers of the
pretrain_base stage."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import edit_yaml

pytestmark = pytest.mark.slow


def torchrun(project: Path, nproc: int, **popen) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "bar.stages.pretrain_base",
        "--worker",
    ]
    return subprocess.Popen(
        cmd, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True, **popen
    )


def finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-5000:]
    return out


def final(project: Path) -> tuple[dict, dict]:
    root = project / "checkpoints" / "pretrain_base" / "final"
    return json.loads((root / "checkpoint.json").read_text()), load_file(root / "model.safetensors")


def configure(project: Path, **train) -> None:
    preset = project / "specs" / "presets" / "tiny.yaml"
    for key, value in train.items():
        edit_yaml(preset, f"train.pretrain.{key}", value)


def test_tp2_matches_tp1(tiny_project, tmp_path):
    import shutil

    other = tmp_path / "tp2"
    shutil.copytree(tiny_project, other)
    for project in (tiny_project, other):  # compared in fp32: bf16 rounds the two apart by its resolution
        edit_yaml(project / "specs" / "model.yaml", "precision", "fp32")
    configure(tiny_project, steps=20, tp_size=1, checkpoint_every=100)
    configure(other, steps=20, tp_size=2, checkpoint_every=10)
    finish(torchrun(tiny_project, 1))
    finish(torchrun(other, 2))
    (meta1, w1), (meta2, w2) = final(tiny_project), final(other)
    loss1 = [r["loss"] for r in meta1["logs"]["train"]]
    loss2 = [r["loss"] for r in meta2["logs"]["train"]]
    assert len(loss1) == len(loss2) == 20
    diff = max(abs(a - b) for a, b in zip(loss1, loss2))
    print(f"TP=2 vs TP=1 over 20 steps: max |loss diff| = {diff:.2e}")
    assert diff < 1e-4
    assert loss1[-1] < loss1[0] - 0.2  # it is actually learning
    # Checkpoints hold full tensors, whatever the tensor-parallel size.
    assert {k: v.shape for k, v in w1.items()} == {k: v.shape for k, v in w2.items()}
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) < 1e-3

    # The checkpoint tp 2 saved at step 10 resumes at tp 1: the layout is not part of what a
    # checkpoint belongs to (bar.train.checkpoint.LAYOUT).
    for done in (
        other / "checkpoints" / "pretrain_base" / "final",
        other / "checkpoints" / "pretrain_base" / "train" / "final",
    ):
        shutil.rmtree(done)
    configure(other, tp_size=1)
    out = finish(torchrun(other, 1))
    assert "pretrain_base: resuming from step 10 of 20" in out
    resumed = [r["loss"] for r in final(other)[0]["logs"]["train"]]
    diff = max(abs(a - b) for a, b in zip(resumed[10:], loss2[10:]))
    print(f"saved at tp 2, resumed at tp 1: steps 11-20 max |loss diff| against tp 2 = {diff:.2e}")
    assert resumed[:10] == loss2[:10] and diff < 1e-5


def losses(project: Path) -> list[float]:
    return [r["loss"] for r in final(project)[0]["logs"]["train"]]


def max_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_dp2_and_two_nodes_match_dp1(tiny_project, tmp_path):
    """The same global batch over two data-parallel replicas (one node of two processes, and two
    "nodes" of one process each on loopback, each started by `python -m bar.launch`) trains as one
    process does; fp32."""
    import shutil

    from conftest import free_port

    edit_yaml(tiny_project / "specs" / "model.yaml", "precision", "fp32")
    configure(tiny_project, steps=20, tp_size=1, dp_size=1, checkpoint_every=100)
    dp2, nodes = tmp_path / "dp2", tmp_path / "nodes"
    for project in (dp2, nodes):
        shutil.copytree(tiny_project, project)
        configure(project, dp_size=2, checkpoint_every=10)
    finish(torchrun(tiny_project, 1))
    finish(torchrun(dp2, 2))
    endpoint = f"127.0.0.1:{free_port()}"
    launchers = [
        subprocess.Popen(
            [sys.executable, "-m", "bar.launch", "pretrain_base"],
            cwd=nodes,
            env={**os.environ, "BAR_NNODES": "2", "BAR_NODE_RANK": str(rank), "BAR_RDZV_ENDPOINT": endpoint},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        for rank in (0, 1)
    ]
    for proc in launchers:
        finish(proc)
    one, two = losses(tiny_project), losses(dp2)
    assert len(one) == len(two) == 20 and one[-1] < one[0] - 0.2
    loss_diff = max(abs(a - b) for a, b in zip(one, two))
    weight_diff = max_diff(final(tiny_project)[1], final(dp2)[1])
    print(f"dp 2 vs dp 1, 20 steps: max |loss diff| {loss_diff:.1e}, max |weight diff| {weight_diff:.1e}")
    assert loss_diff < 1e-5 and weight_diff < 1e-5
    assert losses(nodes) == two and max_diff(final(nodes)[1], final(dp2)[1]) == 0  # the same processes, launched apart

    # Each replica keeps the optimizer state of its share of the weights (bar.train.optimizer); a
    # checkpoint holds every share, so dp 2's step-10 checkpoint resumes in one process.
    for done in (
        dp2 / "checkpoints" / "pretrain_base" / "final",
        dp2 / "checkpoints" / "pretrain_base" / "train" / "final",
    ):
        shutil.rmtree(done)
    configure(dp2, dp_size=1)
    assert "pretrain_base: resuming from step 10 of 20" in finish(torchrun(dp2, 1))
    resumed = losses(dp2)
    diff = max(abs(a - b) for a, b in zip(resumed[10:], two[10:]))
    print(f"saved at dp 2, resumed at dp 1: steps 11-20 max |loss diff| against dp 2 = {diff:.1e}")
    assert resumed[:10] == two[:10] and diff < 1e-5


def test_killed_training_resumes_from_its_last_checkpoint_to_the_same_weights(tiny_project, tmp_path):
    """Killed (SIGKILL, the whole process group) once a checkpoint at a seeded random step is
    written, the re-run says and records (`resumed_from` in the log) that it resumed from the
    newest checkpoint, and ends bit-identical to a run never interrupted."""
    import shutil

    configure(tiny_project, steps=60, checkpoint_every=5)
    reference = tmp_path / "reference"
    shutil.copytree(tiny_project, reference)
    finish(torchrun(reference, 1))

    wait_for = random.Random(34).choice(range(5, 60, 5))  # a checkpoint step after the first
    proc = torchrun(tiny_project, 1)
    ckpts = tiny_project / "checkpoints" / "pretrain_base" / "train"

    def saved() -> list[int]:
        return [int(p.name.split("_")[1]) for p in ckpts.glob("step_*") if (p / "checkpoint.json").exists()]

    deadline = time.time() + 300
    while not any(step >= wait_for for step in saved()):
        assert proc.poll() is None, f"worker ended before its checkpoint at step {wait_for}"
        assert time.time() < deadline
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (ckpts / "final").exists(), "killed too late: the run had already finished"
    killed_at = max(saved())
    print(f"killed after the checkpoint at step {killed_at} (waited for {wait_for})")
    assert wait_for <= killed_at < 60

    out = finish(torchrun(tiny_project, 1))
    assert f"pretrain_base: resuming from step {killed_at} of 60" in out
    (meta, weights), (ref_meta, ref_weights) = final(tiny_project), final(reference)
    log, ref_log = meta["logs"]["train"], ref_meta["logs"]["train"]
    assert [r["step"] for r in log] == list(range(1, 61))
    assert [(r["step"], r["resumed_from"]) for r in log if "resumed_from" in r] == [(killed_at + 1, killed_at)]
    assert not any("resumed_from" in r for r in ref_log)
    assert [r["loss"] for r in log] == [r["loss"] for r in ref_log]
    assert weights.keys() == ref_weights.keys()
    for name in weights:
        assert (weights[name] == ref_weights[name]).all(), name
