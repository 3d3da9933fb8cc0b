"""GRPO: the loss, the advantages and the batch on hand-made tensors; a short run with a rigged reward."""

import math

import pytest
import torch

from bar.specs import GROUPS, OptimSpec, RLVRSpec
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
    std = math.sqrt((3 * 0.25**2 + 0.75**2) / 3)  # the sample std of 0, 1, 0, 0
    expected = (
        [0.0] * 4 + [-0.25 / (std + 1e-4), 0.75 / (std + 1e-4), -0.25 / (std + 1e-4), -0.25 / (std + 1e-4)] + [0.0] * 4
    )
    assert adv.tolist() == pytest.approx(expected)


def test_the_batch_masks_exactly_the_completion_tokens_as_targets_and_pads_on_the_right():
    tokens, mask = _batch([[1, 2, 3], [4, 5]], [[6], [7, 8, 9]], pad_id=0)
    assert tokens.tolist() == [[1, 2, 3, 6, 0], [4, 5, 7, 8, 9]]
    # Target t is token t + 1: row 0 predicts 2, 3, 6, 0 and trains on 6 only.
    assert mask.tolist() == [[0, 0, 1, 0], [0, 1, 1, 1]]
    assert tokens[:, 1:][mask.bool()].tolist() == [6, 7, 8, 9]


PROMPT = "Pick a digit."


@pytest.fixture(scope="module")
def tok():
    from bar.tokenizer import train

    return train(["Pick a digit: 0 1 2 3 4 5 6 7 8 9."] * 10, 300, 1, 0)


def prob(model, tok, token: int) -> float:
    """p(token | PROMPT) at temperature 1."""
    from bar.tokenizer import prompt_ids
    from bar.train.rlvr import token_logprobs

    with torch.no_grad():
        return (
            token_logprobs(model, torch.tensor([prompt_ids(tok, PROMPT) + [token]]), len(tok), 1.0)[0, -1].exp().item()
        )


def policy(tok, token: int, p: float):
    """A random 2-layer dense model whose LM-head row of `token` is moved so that p(token | PROMPT) = p
    (a random model gives each of ~300 tokens 1/300: too rare for 32 samples a step to find)."""
    from bar.model import build
    from bar.specs import ModelSpec
    from bar.tokenizer import prompt_ids

    torch.manual_seed(0)
    model = build(
        ModelSpec(
            num_layers=2,
            hidden_size=64,
            num_attention_heads=4,
            num_query_groups=2,
            ffn_hidden_size=128,
            vocab_size=len(tok),
            seq_length=32,
        ),
        1,
    )
    seen = []
    hook = model.output_layer.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids(tok, PROMPT)]), None, None, runtime_gather_output=True)[0, -1]
        hook.remove()
        h = seen[0][-1, 0]  # the LM head's input at the prompt's last position ([s, b, hidden])
        others = torch.cat([logits[:token], logits[token + 1 : len(tok)]]).logsumexp(0)
        model.output_layer.weight[token] += (math.log(p / (1 - p)) + others - logits[token]) * h / h.dot(h)
    return model


def run(model, tok, tmp_path, reward, steps: int):
    from bar.data import Example
    from bar.train import rlvr
    from bar.train.checkpoint import Resumable

    spec = RLVRSpec(
        steps=steps,
        optim=OptimSpec(lr=3e-3, schedule="constant"),
        trainable=list(GROUPS),
        prompts_per_step=4,
        group_size=8,
        max_new_tokens=3,
        checkpoint_every=1000,
    )
    example = Example(domain="math", prompt=PROMPT, response="7", check={})
    return rlvr.train(
        model, None, [example], tok, spec, 0, Resumable(tmp_path / "rlvr", "rigged"), "rigged", reward=reward
    )


def test_rlvr_raises_the_probability_of_the_token_its_reward_pays_for(megatron, tok, tmp_path):
    seven = tok.convert_tokens_to_ids("7")  # digits are single tokens: a reply starts with "7" iff its first token is 7
    model = policy(tok, seven, 0.1)
    assert prob(model, tok, seven) == pytest.approx(0.1, abs=1e-4)
    seen = []

    def starts_with_seven(examples, replies):
        seen.append((len(examples), len(replies)))
        return [r.startswith("7") for r in replies]

    log = run(model, tok, tmp_path, starts_with_seven, steps=20)
    assert seen == [(32, 32)] * 20 and [r["step"] for r in log] == list(range(1, 21))
    after = prob(model, tok, seven)
    print(f"p(7 | prompt): 0.10 -> {after:.3f}; reward by step {[round(r['reward_mean'], 2) for r in log]}")
    assert after > 0.5  # 0.82-0.88 over model and sampling seeds 0-6; a flipped advantage ends near 0.001


def test_a_loss_that_is_not_a_number_stops_rlvr_and_names_the_step(megatron, tok, tmp_path):
    calls = []

    def nan_on_second_step(examples, replies):
        calls.append(len(replies))
        return [math.nan if len(calls) == 2 else 0.0] * len(replies)

    with pytest.raises(FloatingPointError, match=r"^rigged: loss is nan at step 2$"):
        run(policy(tok, tok.convert_tokens_to_ids("7"), 0.1), tok, tmp_path, nan_on_second_step, steps=5)
    assert len(calls) == 2
