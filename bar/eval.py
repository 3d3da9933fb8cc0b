"""Scoring a model on a domain's held-out prompts with the domain's verifier."""

from __future__ import annotations

import torch

from bar import data, tokenizer
from bar.generate import generate


def responses(model, tok, prompts: list[str], *, max_new_tokens: int, batch_size: int = 32,
              temperature: float = 0.0, generator: torch.Generator | None = None) -> list[str]:
    """The model's reply to each prompt (greedy by default), batched by prompt length."""
    encoded = [tokenizer.prompt_ids(tok, p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    out: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        new = generate(model, [encoded[i] for i in idx], max_new_tokens=max_new_tokens,
                       stop_ids=tokenizer.stop_ids(tok), vocab_size=len(tok), pad_id=tok.pad_token_id,
                       temperature=temperature, generator=generator)
        for i, ids in zip(idx, new):
            out[i] = tokenizer.decode_response(tok, ids)
    return out


def score(model, tok, examples: list[data.Example], *, max_new_tokens: int,
          batch_size: int = 32) -> dict:
    """Pass rate (0-100) of greedy replies under the domain's verifier, and a few samples."""
    if not examples:
        return {"pass_rate": float("nan"), "num_examples": 0, "samples": []}
    domain = examples[0].domain
    replies = responses(model, tok, [e.prompt for e in examples], max_new_tokens=max_new_tokens,
                        batch_size=batch_size)
    ok = data.verify_batch(domain, replies, [e.check for e in examples])
    samples = [{"prompt": e.prompt, "response": r, "correct": c}
               for e, r, c in list(zip(examples, replies, ok))[:5]]
    return {"pass_rate": 100.0 * sum(ok) / len(ok), "num_examples": len(ok), "samples": samples}
