"""A half-written output is never published."""

import pytest

from bar.files import atomic_dir


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
