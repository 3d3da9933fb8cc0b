"""Scoring a model on each domain's held-out prompts with the domain's verifier."""

from __future__ import annotations

from pathlib import Path

import torch

from bar import data, tokenizer
from bar.data.example import read_examples
from bar.data.verify import verifier_files
from bar.decode import generate
from bar.files import output
from bar.specs import EvalSpec


def responses(
    model,
    tok,
    prompts: list[str | list[dict]],
    *,
    max_new_tokens: int,
    tools: list[list[dict]] | None = None,
    batch_size: int = 32,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    sequence_topk: int | None = None,
) -> list[str]:
    """The model's reply to each prompt (a user turn, or a conversation with `tools` shown; greedy
    by default), batched by prompt length."""
    tools = tools or [[]] * len(prompts)
    encoded = [tokenizer.prompt_ids(tok, p, t) for p, t in zip(prompts, tools)]
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
        [e.asked for e in examples],
        tools=[e.tools for e in examples],
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


def eval_examples(domain: str, spec: EvalSpec) -> list[data.Example]:
    """The first `spec.num_examples` of the domain's held-out split (prepare_data's)."""
    return read_examples(output("prepare_data", domain, "eval.jsonl"))[: spec.num_examples]


def eval_files() -> list[Path]:
    """Every domain's held-out split and the user's verifiers: what a stage's scores depend on."""
    return sorted(output("prepare_data").glob("*/eval.jsonl")) + verifier_files()


def score_all(model, tok, domains: list[str], spec: EvalSpec, sequence_topk: int | None = None, progress=None) -> dict:
    """`score` on each domain's held-out split (`sequence_topk`: `bar.decode.generate`); a tqdm
    `progress` bar advances once per domain."""
    model.eval()
    scores = {}
    with torch.no_grad():
        for d in domains:
            scores[d] = score(
                model,
                tok,
                eval_examples(d, spec),
                batch_size=spec.batch_size,
                max_new_tokens=spec.max_new_tokens,
                sequence_topk=sequence_topk,
            )
            if progress is not None:
                progress.update(1)
    return scores
