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
    inputs = tokens[:, :-1]
    width = inputs.size(1)
    if model.config.sequence_parallel:  # the sequence splits evenly over the ranks: right padding, ignored
        inputs = torch.nn.functional.pad(inputs, (0, -width % parallel.tp_size()))
    logits = model(inputs, None, None, runtime_gather_output=True)[:, :width].float() / temperature
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
    per-step log.

    Each step's prompts are split over the data-parallel replicas (replica r takes the r-th
    equal share, whole groups, so advantages stay within a replica), and each replica's rows into
    micro-batches of `spec.micro_batch_size` (None: one) for its rollouts and log-probs. A row
    samples what it would in one batch (`generate`'s `rows_of`) and each micro-batch's loss
    weighs its rows' share of the step, so the gradient is the same at any split."""
    opt = optimizer(model, spec.optim, spec.lr_scale)
    meta = ckpt.restore(model, opt)
    start = resumed(meta, ckpt, spec.steps, desc)
    log = Log(ckpt.root / "log.jsonl", meta["log"] if meta else [])
    drawn = draws(items, spec, seed)
    vocab, pad = len(tok), tok.pad_token_id
    total = spec.prompts_per_step * spec.group_size
    rows = total // parallel.dp_size()
    first = parallel.dp_rank() * rows
    micro = spec.micro_batch_size or rows
    chunks = [slice(a, a + micro) for a in range(0, rows, micro)]
    device = parallel.device()
    encoded = {}
    bar = progress(spec.steps, start, desc)
    for step in range(start, spec.steps):
        lr = lr_at(step, spec.optim, spec.steps)
        set_lr(opt, lr)
        picked = drawn[step * spec.prompts_per_step : (step + 1) * spec.prompts_per_step]
        examples = [e for e in picked for _ in range(spec.group_size)][first : first + rows]
        prompts = [encoded.setdefault(id(e), tokenizer.prompt_ids(tok, e.asked, e.tools)) for e in examples]
        completions = []
        for c in chunks:
            # The same generator state on every tensor-parallel rank gives the same samples.
            gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
            completions += generate(
                model,
                prompts[c],
                max_new_tokens=spec.max_new_tokens,
                stop_ids=tokenizer.stop_ids(tok),
                vocab_size=vocab,
                pad_id=pad,
                temperature=spec.temperature,
                generator=gen,
                rows_of=(first + c.start, total),
            )
        replies = [tokenizer.decode_response(tok, c) for c in completions]
        rewards = torch.tensor(reward(examples, replies), dtype=torch.float32, device=device)
        adv = group_advantages(rewards, spec.group_size)
        batches = [_batch(prompts[c], completions[c], pad, device) for c in chunks]

        model.train()
        with torch.no_grad():
            old_lp = [token_logprobs(model, tokens, vocab, spec.temperature) for tokens, _ in batches]
            ref_lp = [
                token_logprobs(reference, tokens, vocab, spec.temperature) if reference is not None else None
                for tokens, _ in batches
            ]
        for _ in range(spec.updates_per_step):
            opt.zero_grad()
            # kl in float64, as the float grpo_loss returns it
            loss, kl = torch.zeros((), device=device), torch.zeros((), dtype=torch.float64, device=device)
            for c, (tokens, mask), old, ref in zip(chunks, batches, old_lp, ref_lp):
                new_lp = token_logprobs(model, tokens, vocab, spec.temperature)
                part, part_kl = grpo_loss(new_lp, old, ref, adv[c], mask, spec)
                share = len(tokens) / total  # these rows' share of the step (1 in one batch)
                (part * share).backward()
                loss += part.detach() * share
                kl += part_kl * share
            parallel.sum_over_replicas([loss, kl])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{desc}: loss is {loss.item()} at step {step + 1}")
            grad_norm = opt.step(spec.optim.grad_clip)
        every = parallel.gather_replicas(rewards)  # the step's rewards, in the step's order
        lengths = parallel.gather_replicas(torch.cat([mask.sum(1) for _, mask in batches]))
        log.append(
            {
                "step": step + 1,
                "loss": loss.item(),
                "lr": lr,
                "grad_norm": grad_norm,
                "reward_mean": float(every.mean()),
                "pass_rate": float(every.view(-1, spec.group_size).max(1).values.mean()),
                "kl": kl.item(),
                "completion_length": float(lengths.mean()),
                "tokens": int(lengths.sum()),
                **({"resumed_from": start} if step == start > 0 else {}),
            }
        )
        bar.update(1)
        bar.set_postfix(reward=f"{every.mean():.2f}")
        if (step + 1) % spec.checkpoint_every == 0 and step + 1 < spec.steps:
            ckpt.save(step + 1, model, opt, {"log": log.records})
    bar.close()
    return log.records
