"""Seeded generation of chat examples and plain-text documents for every domain."""

from __future__ import annotations

from types import ModuleType

from bar.data.domains import MODULES
from bar.data.example import (
    DOMAINS,
    SPLITS,
    TOOL_CALL_END,
    TOOL_CALL_START,
    Example,
    derived_rng,
    is_eval_prompt,
)

# examples() gives up after this many candidates in a row that were duplicates or in the
# other split: by then the domain's generator has (nearly) run out of distinct prompts.
_MAX_STALE_CANDIDATES = 20_000


def _module(domain: str) -> ModuleType:
    if domain not in MODULES:
        raise ValueError(f"unknown domain {domain!r}; expected one of {', '.join(DOMAINS)}")
    return MODULES[domain]


def examples(domain: str, split: str, n: int, seed: int) -> list[Example]:
    """n examples with distinct prompts, all in `split` ("train" or "eval").

    The split of a prompt depends only on its text (see is_eval_prompt), so train and eval
    never share a prompt. The same (domain, split, seed) always gives the same list, and a
    smaller n gives a prefix of a larger one.
    """
    module = _module(domain)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = derived_rng("examples", domain, split, seed)
    want_eval = split == "eval"
    found: list[Example] = []
    seen: set[str] = set()
    stale = 0
    while len(found) < n:
        example = module.sample(rng)
        if example.prompt in seen or is_eval_prompt(example.prompt) != want_eval:
            stale += 1
            if stale > _MAX_STALE_CANDIDATES:
                raise ValueError(
                    f"domain {domain!r} cannot produce {n} distinct {split} prompts: found "
                    f"{len(found)}, then {_MAX_STALE_CANDIDATES} candidates in a row were repeats. "
                    f"Ask for at most about {len(found)} {split} examples."
                )
            continue
        stale = 0
        seen.add(example.prompt)
        found.append(example)
    return found


def documents(domain: str, n: int, seed: int) -> list[str]:
    """n plain-text documents (no chat template) for pre-/mid-training in `domain`.

    They never contain the tool-call tokens (new to the base model by design) nor an eval
    prompt (documents that quote examples use train-split ones only).
    """
    module = _module(domain)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = derived_rng("documents", domain, seed)
    texts = [module.document(rng) for _ in range(n)]
    for text in texts:
        if TOOL_CALL_START in text or TOOL_CALL_END in text:
            raise AssertionError(f"a {domain} document contains a tool-call token: {text[:200]!r}")
    return texts
