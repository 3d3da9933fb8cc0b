"""How a training stage's parent and workers hand over: what a finished training keeps, what is
reused, the metrics a log sums to, and what publishing leaves of the checkpoints."""

import pytest
import torch

from bar import runner
from bar.train.checkpoint import write


def test_finished_training_is_kept_and_counts_as_reused_only_for_another_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = []

    def train(ckpt):
        calls.append(ckpt.root)
        with torch.no_grad():
            model.weight.fill_(2.0)
        return [{"step": 0, "loss": 1.0}]

    model = torch.nn.Linear(2, 2, bias=False)
    assert runner.kept_training("s", model, "weights-fp", "run-a", train) == ([{"step": 0, "loss": 1.0}], [])
    assert calls == [tmp_path.joinpath("checkpoints", "s", "train").relative_to(tmp_path)]
    fresh = torch.nn.Linear(2, 2, bias=False)
    # The same run again: nothing trains, nothing is "reused" (it is this run's own work).
    assert runner.kept_training("s", fresh, "weights-fp", "run-a", train) == ([{"step": 0, "loss": 1.0}], [])
    assert len(calls) == 1 and torch.equal(fresh.weight, torch.full((2, 2), 2.0))
    # Another run (e.g. only the evaluation changed) with the same weights: reused.
    assert runner.kept_training("s", fresh, "weights-fp", "run-b", train)[1] == [runner.DENSE_PHASE]
    # Other weights: trained again.
    runner.kept_training("s", fresh, "other-weights", "run-b", train)
    assert len(calls) == 2


def test_summary_averages_the_last_tenth_and_sums_tokens():
    records = [{"step": s, "loss": float(s), "tokens": 10, "reward_mean": s / 100} for s in range(20)]
    lm = [{"step": s, "loss": float(s), "tokens": 10} for s in range(5)]
    metrics = runner.summary({"rlvr": records, "sft": [], "midtrain": lm})
    assert metrics == pytest.approx(
        {
            "rlvr/final_loss": 18.5,  # mean of the last 2 of 20
            "rlvr/tokens_total": 200,
            "rlvr/steps": 20,
            "rlvr/reward_first10": 0.005,
            "rlvr/reward_last10": 0.185,
            "midtrain/final_loss": 4.0,  # at least one record
            "midtrain/tokens_total": 50,
            "midtrain/steps": 5,
        }
    )


def test_clean_keeps_each_phases_final_only(tmp_path):
    """A later version that changes only later phases starts from an earlier phase's final."""
    root = tmp_path / "checkpoints" / "train_expert" / "math"
    for phase in ("midtrain", "sft"):
        for step in ("step_0000010", "final"):
            write(root / phase / step, {"model": {"w": torch.zeros(1)}}, {"phase": phase})
    write(root / "final", {"model": {"w": torch.zeros(1)}}, {})  # the stage's own, published already
    (root / "rlvr").mkdir()  # a phase that never finished
    (root / "stray.txt").write_text("x")
    runner.clean(root)
    assert sorted(str(p.relative_to(root)) for p in root.glob("*/*")) == ["midtrain/final", "sft/final"]
    assert sorted(p.name for p in root.iterdir()) == ["midtrain", "sft"]
    # Nothing worth keeping: the folder goes.
    only = tmp_path / "checkpoints" / "train_anchor"
    write(only / "final", {"model": {"w": torch.zeros(1)}}, {})
    runner.clean(only)
    assert not only.exists()
