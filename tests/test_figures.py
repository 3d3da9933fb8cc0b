"""The PNG figures: each is written, with one panel per thing it shows."""

import json

import pytest
from PIL import Image

from bar import figures


def size(path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        return image.size


def test_training_curves_have_a_panel_per_phase_and_quantity(tmp_path):
    """Loss for every phase, and the reward for RLVR: midtrain, sft, rlvr -> 4 panels of 450 px."""
    steps = [{"step": s, "loss": 3.0 - s / 10} for s in range(10)]
    logs = {"midtrain": steps, "sft": steps, "rlvr": [r | {"reward_mean": s / 10} for s, r in enumerate(steps)]}
    figures.training_curves(logs, tmp_path / "t.png", "train_expert@math")
    assert size(tmp_path / "t.png") == (4 * 450, 320)
    figures.training_curves({"sft": steps, "rlvr": []}, tmp_path / "one.png", "x")  # a phase that reused its weights
    assert size(tmp_path / "one.png") == (450, 320)


@pytest.mark.parametrize("panels", [1, 3])
def test_routing_has_a_panel_per_input_domain(tmp_path, panels):
    shares = {f"d{i}": [[0.5, 0.25, 0.25]] * 2 for i in range(panels)}
    figures.routing(shares, ["math", "code"], tmp_path / "r.png")
    assert size(tmp_path / "r.png") == (320 * panels, 300)


def test_scores_cost_and_forgetting_are_written(tmp_path):
    table = {m: {"math": 50.0, "code": 25.0, "overall": 37.5} for m in ("anchor", "routed")}
    figures.scores(table, ["math", "code"], tmp_path / "s.png")
    figures.cost_curve(
        [{"domains": k, "upgrade_flops": k, "retrain_flops": k * k} for k in (1, 2, 3)], tmp_path / "c.png"
    )
    figures.forgetting({"math": {"math": 50.0}, "+code": {"math": 40.0}}, ["math"], tmp_path / "f.png")
    assert [size(tmp_path / f) for f in ("s.png", "c.png", "f.png")] == [(1000, 400), (500, 350), (600, 350)]


def test_rlvr_rewards_draws_only_when_a_model_has_an_rlvr_phase(tmp_path):
    from bar.specs import Specs
    from conftest import make_project

    specs = Specs(make_project(tmp_path / "project", git=False))
    assert not figures.rlvr_rewards(tmp_path, specs, tmp_path / "rl.png")
    assert not (tmp_path / "rl.png").exists()
    log = tmp_path / "outputs" / "train_expert" / "math" / "train_log.json"
    log.parent.mkdir(parents=True)
    rows = [{"phase": "sft", "step": 0, "loss": 1.0}]
    rows += [{"phase": "rlvr", "step": s, "loss": 0.0, "reward_mean": s / 20} for s in range(20)]
    log.write_text(json.dumps(rows))
    assert figures.rlvr_rewards(tmp_path, specs, tmp_path / "rl.png")
    assert size(tmp_path / "rl.png") == (600, 350)
