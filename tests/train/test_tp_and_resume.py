"""Tensor parallelism and resuming, through real torchrun workers of the pretrain_base stage."""

import json
import os
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
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "bar.stages.pretrain_base", "--worker"]
    return subprocess.Popen(cmd, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, **popen)


def finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-5000:]


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
    configure(other, steps=20, tp_size=2, checkpoint_every=100)
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


def test_killed_training_resumes_to_the_same_weights(tiny_project, tmp_path):
    import shutil

    configure(tiny_project, steps=60, checkpoint_every=10)
    reference = tmp_path / "reference"
    shutil.copytree(tiny_project, reference)
    finish(torchrun(reference, 1))

    proc = torchrun(tiny_project, 1)
    ckpts = tiny_project / "checkpoints" / "pretrain_base" / "train"
    deadline = time.time() + 300
    while not any((p / "checkpoint.json").exists() for p in ckpts.glob("step_*")):
        assert proc.poll() is None, "worker ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (ckpts / "final").exists(), "killed too late: the run had already finished"
    killed_at = max(int(p.name.split("_")[1]) for p in ckpts.glob("step_*"))
    assert 0 < killed_at < 60

    finish(torchrun(tiny_project, 1))
    (meta, weights), (ref_meta, ref_weights) = final(tiny_project), final(reference)
    assert [r["step"] for r in meta["logs"]["train"]] == list(range(1, 61))
    assert [r["loss"] for r in meta["logs"]["train"]] == [r["loss"] for r in ref_meta["logs"]["train"]]
    assert weights.keys() == ref_weights.keys()
    for name in weights:
        assert (weights[name] == ref_weights[name]).all(), name
