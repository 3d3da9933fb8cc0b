"""RLVR: GRPO with a verifier as the reward.

Each step samples `group_size` completions for each of `prompts_per_step` prompts with the
KV-cache decoder, scores them with the domain's verifier, normalises rewards within each
group (the group mean is the baseline; no value model), and takes `updates_per_step`
optimiser steps on the clipped-ratio objective, optionally with a KL penalty (k3 estimator)
to the policy as it was when RLVR started.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

import torch

from bar import data, parallel, tokenizer
from bar.decode import generate
from bar.specs import RLVRSpec
from bar.train import Log, lr_at, optimizer, progress, resumed, set_lr
from bar.train.checkpoint import Resumable


def token_logprobs(model, tokens: torch.Tensor, vocab_size: int, temperature: float) -> torch.Tensor:
    """log p(tokens[:, t+1] | tokens[:, :t+1]) for every t, under the sampling temperature."""
    logits = model(tokens[:, :-1], None, None, runtime_gather_output=True).float() / temperature
    logits[..., vocab_size:] = float("-inf")
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)


def verify(examples: list[data.Example], replies: list[str]) -> list[bool]:
    """Each reply checked by its example's domain verifier (one batch per domain: prompts of
    several domains train together in the monolithic baseline)."""
    passed = [False] * len(replies)
    by_domain: dict[str, list[int]] = {}
    for i, e in enumerate(examples):
        by_domain.setdefault(e.domain, []).append(i)
    for domain, rows in by_domain.items():
        for i, ok in zip(
            rows, data.verify_batch(domain, [replies[i] for i in rows], [examples[i].check for i in rows])
        ):
            passed[i] = ok
    return passed


# What scores a step's replies: (the example each reply answers, the replies' text) -> one
# reward per reply (True/False count as 1/0). `verify` in the pipeline.
Reward = Callable[[list[data.Example], list[str]], Sequence[float]]


def group_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(r - group mean) / (group std + eps); all-equal groups carry no signal (advantage 0)."""
    r = rewards.view(-1, group_size)
    return ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).view(-1)


def _batch(prompts: list[list[int]], completions: list[list[int]], pad_id: int, device=None):
    """Right-padded prompt+completion rows and the mask of completion tokens (as targets)."""
    rows = [p + c for p, c in zip(prompts, completions)]
    width = max(map(len, rows))
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros(len(rows), width - 1, device=device)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        tokens[i, : len(p) + len(c)] = torch.tensor(p + c, device=device)
        mask[i, len(p) - 1 : len(p) - 1 + len(c)] = 1.0  # target index t predicts token t+1
    return tokens, mask


def grpo_loss(new_lp, old_lp, ref_lp, adv, mask, spec: RLVRSpec) -> tuple[torch.Tensor, float]:
    ratio = torch.exp(new_lp - old_lp)
    a = adv[:, None]
    per_token = -torch.min(ratio * a, ratio.clamp(1 - spec.clip_eps, 1 + spec.clip_eps) * a)
    kl = torch.zeros_like(per_token)
    if ref_lp is not None:
        d = ref_lp - new_lp
        kl = torch.exp(d) - d - 1
        per_token = per_token + spec.kl_coef * kl
    lengths = mask.sum(1).clamp(min=1)
    loss = ((per_token * mask).sum(1) / lengths).mean()
    return loss, float(((kl.detach() * mask).sum(1) / lengths).mean())


def draws(items: list, spec: RLVRSpec, seed: int) -> list:
    """The prompts a run of `spec` draws, in order (`prompts_per_step` a step): `items` in a
    seeded order, cycled as often as the steps need."""
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    return [items[order[j % len(order)]] for j in range(spec.steps * spec.prompts_per_step)]


def train(
    model,
    reference,
    items: list[data.Example],
    tok,
    spec: RLVRSpec,
    seed: int,
    ckpt: Resumable,
    desc: str,
    reward: Reward = verify,
) -> list[dict]:
    """GRPO on `items` (prompts + verifier checks), each reply scored by `reward`; returns the
    per-step log."""
    opt = optimizer(model, spec.optim, spec.lr_scale)
    meta = ckpt.restore(model, opt)
    start = resumed(meta, ckpt, spec.steps, desc)
    log = Log(ckpt.root / "log.jsonl", meta["log"] if meta else [])
    drawn = draws(items, spec, seed)
    vocab, pad = len(tok), tok.pad_token_id
    encoded = {}
    bar = progress(spec.steps, start, desc)
    for step in range(start, spec.steps):
        lr = lr_at(step, spec.optim, spec.steps)
        set_lr(opt, lr)
        picked = drawn[step * spec.prompts_per_step : (step + 1) * spec.prompts_per_step]
        prompts = []
        for e in picked:
            encoded.setdefault(e.prompt, tokenizer.prompt_ids(tok, e.prompt))
            prompts += [encoded[e.prompt]] * spec.group_size
        # Rollouts: the same generator state on every tensor-parallel rank gives the same samples.
        gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
        completions = generate(
            model,
            prompts,
            max_new_tokens=spec.max_new_tokens,
            stop_ids=tokenizer.stop_ids(tok),
            vocab_size=vocab,
            pad_id=pad,
            temperature=spec.temperature,
            generator=gen,
        )
        replies = [tokenizer.decode_response(tok, c) for c in completions]
        rewards = torch.tensor(
            reward([e for e in picked for _ in range(spec.group_size)], replies),
            dtype=torch.float32,
            device=parallel.device(),
        )
        adv = group_advantages(rewards, spec.group_size)
        tokens, mask = _batch(prompts, completions, pad, parallel.device())

        model.train()
        with torch.no_grad():
            old_lp = token_logprobs(model, tokens, vocab, spec.temperature)
            ref_lp = token_logprobs(reference, tokens, vocab, spec.temperature) if reference is not None else None
        for _ in range(spec.updates_per_step):
            new_lp = token_logprobs(model, tokens, vocab, spec.temperature)
            loss, kl = grpo_loss(new_lp, old_lp, ref_lp, adv, mask, spec)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: loss is {loss.item()} at step {step + 1}")
            opt.zero_grad()
            loss.backward()
            grad_norm = opt.step(spec.optim.grad_clip)
        solved = rewards.view(-1, spec.group_size).max(1).values
        log.append(
            {
                "step": step + 1,
                "loss": loss.item(),
                "lr": lr,
                "grad_norm": grad_norm,
                "reward_mean": float(rewards.mean()),
                "pass_rate": float(solved.mean()),
                "kl": kl,
                "completion_length": float(mask.sum(1).mean()),
                "tokens": int(mask.sum()),
                **({"resumed_from": start} if step == start > 0 else {}),
            }
        )
        bar.update(1)
        bar.set_postfix(reward=f"{rewards.mean():.2f}")
        if (step + 1) % spec.checkpoint_every == 0 and step + 1 < spec.steps:
            ckpt.save(step + 1, model, opt, {"log": log.records})
    bar.close()
    return log.records
