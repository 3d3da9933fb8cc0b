"""Scoring a model on a domain's held-out prompts with the domain's verifier."""

from __future__ import annotations

import torch

from bar import data, tokenizer
from bar.decode import choose_experts, generate


def responses(
    model,
    tok,
    prompts: list[str],
    *,
    max_new_tokens: int,
    batch_size: int = 32,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    sequence_topk: int | None = None,
) -> list[str]:
    """The model's reply to each prompt (greedy by default), batched by prompt length."""
    encoded = [tokenizer.prompt_ids(tok, p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    out: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        new = generate(
            model,
            [encoded[i] for i in idx],
            max_new_tokens=max_new_tokens,
            stop_ids=tokenizer.stop_ids(tok),
            vocab_size=len(tok),
            pad_id=tok.pad_token_id,
            temperature=temperature,
            generator=generator,
            sequence_topk=sequence_topk,
        )
        for i, ids in zip(idx, new):
            out[i] = tokenizer.decode_response(tok, ids)
    return out


def score(
    model,
    tok,
    examples: list[data.Example],
    *,
    max_new_tokens: int,
    batch_size: int = 32,
    sequence_topk: int | None = None,
) -> dict:
    """Pass rate (0-100) of greedy replies under the domain's verifier, whether each reply
    passed (`correct`, in the examples' order) and a few samples."""
    if not examples:
        return {"pass_rate": float("nan"), "num_examples": 0, "correct": [], "samples": []}
    domain = examples[0].domain
    replies = responses(
        model,
        tok,
        [e.prompt for e in examples],
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        sequence_topk=sequence_topk,
    )
    ok = data.verify_batch(domain, replies, [e.check for e in examples])
    samples = [{"prompt": e.prompt, "response": r, "correct": c} for e, r, c in list(zip(examples, replies, ok))[:5]]
    return {
        "pass_rate": 100.0 * sum(ok) / len(ok),
        "num_examples": len(ok),
        "correct": [bool(c) for c in ok],
        "samples": samples,
    }


def paired_se(a: list[bool], b: list[bool]) -> float:
    """Standard error (points) of the difference of two pass rates on the same prompts: how far
    `mean(b) - mean(a)` could move on another held-out set of this size. Only the prompts where
    the two models disagree contribute, so it is smaller than either score's own error."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"paired_se needs two outcome lists of one length >= 2, got {len(a)} and {len(b)}")
    d = [int(y) - int(x) for x, y in zip(a, b)]
    mean = sum(d) / len(d)
    var = sum((v - mean) ** 2 for v in d) / (len(d) - 1)
    return 100.0 * (var / len(d)) ** 0.5


@torch.no_grad()
def routing_shares(model, tok, examples: list[data.Example], batch_size: int = 16) -> list[list[float]]:
    """Mean router probability of each expert, per layer ([layer][expert]), over the tokens of
    the examples (prompt and reference reply, teacher-forced)."""
    from bar import parallel
    from bar.train.batches import pack

    device = parallel.device()
    routers = [layer.mlp.router for layer in model.decoder.layers]
    captured = {}
    handles = [
        r.register_forward_hook(lambda m, args, out, i=i: captured.__setitem__(i, out[0].float()))
        for i, r in enumerate(routers)
    ]
    items = [tokenizer.chat_ids(tok, e.prompt, e.response) for e in examples]
    rows = pack(items, max(len(ids) for ids, _ in items) - 1, tok.pad_token_id)
    sums, count = torch.zeros(len(routers), model.config.num_moe_experts, device=device), 0
    try:
        model.eval()
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            tokens = torch.tensor([r[0] for r in chunk], device=device)
            segments = torch.tensor([r[2] for r in chunk], device=device)
            model(tokens, None, segments)  # each packed example attends to itself only
            real = (segments > 0).t().reshape(-1)  # the router sees tokens sequence-major
            for i in range(len(routers)):
                sums[i] += captured[i][real].sum(0)
            count += int(real.sum())
    finally:
        for h in handles:
            h.remove()
    return (sums / count).tolist()


def expert_choices(model, tok, examples: list[data.Example], sequence_topk: int, batch_size: int = 32) -> list[float]:
    """Share of the examples' prompts each slot serves when the routed model decodes them with
    `sequence_topk` ([slot]; the anchor, slot 0, serves every prompt)."""
    encoded = [tokenizer.prompt_ids(tok, e.prompt) for e in examples]
    from bar import parallel

    counts = torch.zeros(model.config.num_moe_experts, dtype=torch.long, device=parallel.device())
    for start in range(0, len(encoded), batch_size):
        counts += choose_experts(
            model, encoded[start : start + batch_size], sequence_topk=sequence_topk, pad_id=tok.pad_token_id
        ).sum(0)
    return [c / len(encoded) for c in counts.tolist()]
