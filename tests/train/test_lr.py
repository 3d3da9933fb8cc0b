"""The learning-rate schedule, and the rate the dense training loop logs and applies."""

import math

import pytest
import torch

from bar.specs import OptimSpec
from bar.train import lr_at
from conftest import small_arch

COS_36 = (1 + math.sqrt(5)) / 4  # cos(pi / 5)
COS_18 = math.sqrt((5 + math.sqrt(5)) / 8)  # cos(pi / 10)


def schedule(kind: str, total: int = 14, **kw) -> list[float]:
    optim = OptimSpec(lr=1e-3, min_lr=1e-4, warmup_steps=4, schedule=kind, **kw)
    return [lr_at(step, optim, total) for step in range(total)]


@pytest.mark.parametrize("kind", ["cosine", "linear", "constant"])
def test_warmup_climbs_in_equal_steps_to_lr_and_the_first_step_already_trains(kind):
    assert schedule(kind)[:5] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3])


def test_cosine_decays_from_lr_towards_min_lr_over_the_steps_after_warmup():
    lrs = schedule("cosine")  # 10 steps after warmup: progress 0, 0.1, ..., 0.9
    assert lrs[4] == pytest.approx(1e-3)
    assert lrs[6] == pytest.approx(1e-4 + 9e-4 * (1 + COS_36) / 2)  # progress 0.2
    assert lrs[9] == pytest.approx(5.5e-4)  # progress 0.5: halfway between lr and min_lr
    assert lrs[13] == pytest.approx(1e-4 + 9e-4 * (1 - COS_18) / 2)  # progress 0.9


def test_linear_decays_in_equal_steps_from_lr_towards_min_lr():
    assert schedule("linear")[4:] == pytest.approx([1e-4 + 9e-4 * (10 - i) / 10 for i in range(10)])


def test_constant_holds_lr_after_warmup_whatever_min_lr():
    assert schedule("constant")[4:] == pytest.approx([1e-3] * 10)


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_no_step_goes_below_min_lr_and_without_warmup_the_first_step_is_at_lr(kind):
    optim = OptimSpec(lr=1e-3, min_lr=1e-4, schedule=kind)
    lrs = [lr_at(step, optim, 7) for step in range(7)]
    assert lrs[0] == pytest.approx(1e-3)
    assert min(lrs) >= 1e-4 and lrs == sorted(lrs, reverse=True)


def test_the_dense_loop_logs_lr_at_for_each_step_and_trains_at_that_rate(megatron, tmp_path):
    """AdamW with betas (0, 0) moves each weight by lr * g / (|g| + eps): the largest change of
    the LM head in a step is that step's learning rate."""
    from bar.model import build
    from bar.specs import TrainSpec
    from bar.train import train
    from bar.train.batches import Batches
    from bar.train.checkpoint import Resumable

    torch.manual_seed(0)
    model = build(small_arch(vocab_size=64, seq_length=16), 1)
    items = [(torch.randint(1, 64, (12,)).tolist(), [True] * 12) for _ in range(4)]
    batches = Batches(items, batch_size=2, seq_length=16, pad_id=0, seed=0)
    optim = OptimSpec(lr=1e-2, min_lr=1e-3, warmup_steps=2, schedule="cosine", betas=(0.0, 0.0), grad_clip=0.0)
    spec = TrainSpec(steps=6, batch_size=2, optim=optim, checkpoint_every=100)
    head = model.output_layer.weight
    before = []
    model.register_forward_pre_hook(lambda module, args: before.append(head.detach().clone()))

    log = train(model, batches, spec, Resumable(tmp_path / "ckpt", "lr"), "lr")

    assert [r["lr"] for r in log] == [lr_at(step, optim, 6) for step in range(6)]
    weights = [*before, head.detach()]
    applied = [(b - a).abs().max().item() for a, b in zip(weights, weights[1:])]
    assert applied == pytest.approx([r["lr"] for r in log], rel=1e-4)
