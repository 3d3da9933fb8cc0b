"""A half-written or damaged checkpoint or output is never taken as complete."""

import pytest
import torch

from bar.stages import atomic_dir
from bar.train.checkpoint import Resumable, read_meta, write


def save(root, step, fingerprint="fp"):
    path = root / f"step_{step:07d}"
    write(path, {"model": {"w": torch.full((4, 4), float(step))}}, {"step": step, "fingerprint": fingerprint})
    return path


def test_the_newest_complete_checkpoint_of_the_same_configuration_is_resumed(tmp_path):
    save(tmp_path, 10)
    newest = save(tmp_path, 20)
    assert Resumable(tmp_path, "fp").latest()[1]["step"] == 20
    assert Resumable(tmp_path, "other spec").latest() is None  # another configuration's: never resumed
    # Damaged after it was written (a disk error, a partial copy): its hash no longer matches.
    data = (newest / "model.safetensors").read_bytes()
    (newest / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert read_meta(newest) is None
    assert Resumable(tmp_path, "fp").latest()[1]["step"] == 10


def test_a_checkpoint_killed_while_being_written_is_invisible(tmp_path):
    save(tmp_path, 10)
    # What a kill during `write` leaves: the temporary directory, files but no manifest yet.
    partial = tmp_path / ".step_0000020.tmp-4242"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\0" * 100)
    # And a step directory whose manifest is missing or unreadable.
    for broken, manifest in ((tmp_path / "step_0000030", None), (tmp_path / "step_0000040", "{not json")):
        broken.mkdir()
        if manifest:
            (broken / "checkpoint.json").write_text(manifest)
    assert Resumable(tmp_path, "fp").latest()[1]["step"] == 10


def test_a_failed_publish_leaves_the_previous_output_in_place(tmp_path):
    out = tmp_path / "outputs" / "train_anchor"
    out.mkdir(parents=True)
    (out / "model.safetensors").write_text("good")
    with pytest.raises(RuntimeError), atomic_dir(out) as tmp:
        (tmp / "model.safetensors").write_text("half")
        raise RuntimeError("the stage failed while publishing")
    assert (out / "model.safetensors").read_text() == "good"
    assert sorted(p.name for p in out.parent.iterdir()) == ["train_anchor"]  # no temporary left
    with atomic_dir(out) as tmp:
        (tmp / "model.safetensors").write_text("new")
    assert (out / "model.safetensors").read_text() == "new"
    assert sorted(p.name for p in out.parent.iterdir()) == ["train_anchor"]
