"""GRPO: the loss, the advantages and the batch on hand-made tensors."""

import math

import pytest
import torch

from bar.specs import OptimSpec, RLVRSpec
from bar.train.rlvr import _batch, group_advantages, grpo_loss


def spec(**kw) -> RLVRSpec:
    return RLVRSpec(steps=1, optim=OptimSpec(lr=1e-3), trainable=["attention"], **kw)


def loss_and_grad(new_lp, old_lp, adv, mask=None, ref_lp=None, **kw):
    """The loss and its gradient with respect to the new log-probs."""
    new_lp = torch.tensor(new_lp, requires_grad=True)
    old_lp, adv = torch.tensor(old_lp), torch.tensor(adv)
    mask = torch.ones_like(old_lp) if mask is None else torch.tensor(mask)
    ref_lp = None if ref_lp is None else torch.tensor(ref_lp)
    loss, kl = grpo_loss(new_lp, old_lp, ref_lp, adv, mask, spec(**kw))
    loss.backward()
    return loss.item(), new_lp.grad, kl


def test_a_positive_advantage_is_rewarded_for_raising_the_log_prob_and_a_negative_one_for_lowering_it():
    loss, grad, _ = loss_and_grad([[-1.0]], [[-1.0]], [2.0])
    assert loss == pytest.approx(-2.0)  # ratio 1: minus the advantage
    assert grad.item() < 0  # a descent step raises the log-prob
    higher, _, _ = loss_and_grad([[-0.9]], [[-1.0]], [2.0])
    assert higher < loss
    _, grad, _ = loss_and_grad([[-1.0]], [[-1.0]], [-2.0])
    assert grad.item() > 0
    lower, _, _ = loss_and_grad([[-1.1]], [[-1.0]], [-2.0])
    assert lower < 2.0


def test_the_ratio_is_clipped_at_one_plus_or_minus_clip_eps_on_the_side_the_advantage_gains_from():
    up, down = math.log(1.5), math.log(0.5)  # ratios 1.5 and 0.5, beyond clip_eps 0.2 both
    # Past the clip in the direction the advantage pushes: a constant, no gradient.
    loss, grad, _ = loss_and_grad([[up]], [[0.0]], [1.0], clip_eps=0.2)
    assert loss == pytest.approx(-1.2) and grad.item() == 0
    loss, grad, _ = loss_and_grad([[down]], [[0.0]], [-1.0], clip_eps=0.2)
    assert loss == pytest.approx(0.8) and grad.item() == 0
    # Past it the other way: the unclipped (worse) term, and its gradient pulls back.
    loss, grad, _ = loss_and_grad([[down]], [[0.0]], [1.0], clip_eps=0.2)
    assert loss == pytest.approx(-0.5) and grad.item() == pytest.approx(-0.5)
    loss, grad, _ = loss_and_grad([[up]], [[0.0]], [-1.0], clip_eps=0.2)
    assert loss == pytest.approx(1.5) and grad.item() == pytest.approx(1.5)
    # Inside the clip: d(-ratio * adv)/d log-prob = -ratio * adv.
    _, grad, _ = loss_and_grad([[math.log(1.1)]], [[0.0]], [1.0], clip_eps=0.2)
    assert grad.item() == pytest.approx(-1.1)


def test_the_kl_penalty_is_zero_at_the_reference_and_the_k3_estimate_away_from_it():
    lp = [[-1.0, -2.0]]
    loss, grad, kl = loss_and_grad(lp, lp, [0.0], ref_lp=lp, kl_coef=0.5)
    assert loss == 0 and kl == 0 and torch.equal(grad, torch.zeros(1, 2))
    # ref - new = 1 on both tokens: k3 = e^1 - 1 - 1, its gradient pulls the policy towards the reference.
    loss, grad, kl = loss_and_grad([[-2.0, -3.0]], [[-2.0, -3.0]], [0.0], ref_lp=lp, kl_coef=0.5)
    assert kl == pytest.approx(math.e - 2)
    assert loss == pytest.approx(0.5 * (math.e - 2))
    assert torch.allclose(grad, torch.full((1, 2), 0.5 * (1 - math.e) / 2))


def test_masked_tokens_change_neither_the_loss_nor_the_gradient():
    mask = [[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]]
    old = [[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]]
    a = loss_and_grad([[-0.9, -1.0, -1.0], [-1.0, -1.1, -1.0]], old, [1.0, -1.0], mask)
    b = loss_and_grad([[-0.9, -1.0, -3.0], [-0.2, -1.1, -5.0]], old, [1.0, -1.0], mask)
    assert a[0] == b[0] and torch.equal(a[1], b[1])
    assert torch.equal(a[1] == 0, torch.tensor(mask) == 0)
    # Each row is the mean over its own completion tokens (ratios e^0.1 and 1; e^-0.1), then rows are averaged.
    assert a[0] == pytest.approx(((-math.exp(0.1) - 1) / 2 + math.exp(-0.1)) / 2)


def test_a_group_of_equal_rewards_has_zero_advantage_and_others_are_normalised_within_their_group():
    adv = group_advantages(torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 3.0, 3.0, 3.0, 3.0]), 4)
    std = math.sqrt((3 * 0.25 ** 2 + 0.75 ** 2) / 3)  # the sample std of 0, 1, 0, 0
    expected = [0.0] * 4 + [-0.25 / (std + 1e-4), 0.75 / (std + 1e-4), -0.25 / (std + 1e-4), -0.25 / (std + 1e-4)] + [0.0] * 4
    assert adv.tolist() == pytest.approx(expected)


def test_the_batch_masks_exactly_the_completion_tokens_as_targets_and_pads_on_the_right():
    tokens, mask = _batch([[1, 2, 3], [4, 5]], [[6], [7, 8, 9]], pad_id=0)
    assert tokens.tolist() == [[1, 2, 3, 6, 0], [4, 5, 7, 8, 9]]
    # Target t is token t + 1: row 0 predicts 2, 3, 6, 0 and trains on 6 only.
    assert mask.tolist() == [[0, 0, 1, 0], [0, 1, 1, 1]]
    assert tokens[:, 1:][mask.bool()].tolist() == [6, 7, 8, 9]

