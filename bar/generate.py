"""Batched decoding with a key/value cache, on the Megatron-Core model itself.

Prompts are left-padded to a common length; pad keys are masked out. RoPE depends only on
relative positions, so a left-padded row decodes as it would alone. The cache is
Megatron-Core's `StaticInferenceContext`: the prompt is run once (prefill), then each step
feeds one token per row. Under tensor parallelism every rank runs this in lockstep and,
given the same `generator` state, samples the same tokens.
"""

from __future__ import annotations

import torch


def _forward(model, tokens, mask, context):
    logits = model(tokens, None, mask, inference_context=context, runtime_gather_output=True)
    context.sequence_len_offset += tokens.size(1)
    return logits[:, -1, :].float()


@torch.no_grad()
def generate(model, prompts: list[list[int]], *, max_new_tokens: int, stop_ids: set[int],
             vocab_size: int, pad_id: int, temperature: float = 0.0,
             generator: torch.Generator | None = None) -> list[list[int]]:
    """New tokens for each prompt (ending with its stop token if one was produced).

    temperature 0 is greedy. `vocab_size` is the tokenizer's size: logits of the rows the
    model pads its vocabulary with are never chosen.
    """
    from megatron.core.inference.contexts import StaticInferenceContext

    was_training = model.training
    model.eval()
    batch, prompt_len = len(prompts), max(len(p) for p in prompts)
    tokens = torch.full((batch, prompt_len), pad_id, dtype=torch.long)
    pad = torch.ones(batch, prompt_len + max_new_tokens, dtype=torch.bool)  # True = no token there
    for i, p in enumerate(prompts):
        tokens[i, prompt_len - len(p):] = torch.tensor(p)
        pad[i, prompt_len - len(p):] = False
    context = StaticInferenceContext(batch, prompt_len + max_new_tokens)
    causal = torch.ones(prompt_len, prompt_len, dtype=torch.bool).triu(1)
    mask = causal[None, None] | pad[:, None, None, :prompt_len]
    logits = _forward(model, tokens, mask, context)

    out = torch.empty(batch, max_new_tokens, dtype=torch.long)
    done = torch.zeros(batch, dtype=torch.bool)
    stops = torch.tensor(sorted(stop_ids))
    for t in range(max_new_tokens):
        logits[:, vocab_size:] = float("-inf")
        if temperature > 0:
            probs = torch.softmax(logits / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            nxt = logits.argmax(dim=-1)
        nxt = torch.where(done, pad_id, nxt)
        out[:, t] = nxt
        done |= torch.isin(nxt, stops)
        if bool(done.all()) or t == max_new_tokens - 1:
            break
        cur = prompt_len + t + 1
        mask = pad[:, None, None, :cur].clone()
        mask[done, ..., cur - 1] = True  # finished rows feed pads; nobody attends to them
        logits = _forward(model, nxt[:, None], mask, context)
        pad[:, cur - 1] = done

    model.train(was_training)
    results = []
    for row in out[:, : t + 1].tolist():
        n = next((i + 1 for i, tok in enumerate(row) if tok in stop_ids), len(row))
        results.append(row[:n])
    return results
