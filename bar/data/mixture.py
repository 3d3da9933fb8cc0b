"""An expert's data mixture, drawn from the prepared domain pools (mix_data writes it).

Each split takes `sizes[split]` items, split over `sources` by weight; SFT also takes
`general_share` of its items from the general chat pool, so the expert keeps following
instructions. Items are drawn without replacement, deterministically from the seed and the
expert's name.
"""

from __future__ import annotations

import random

from bar.data.example import derived_seed
from bar.files import output, read_jsonl
from bar.specs import MixtureSpec, SpecError, Specs


def shares(total: int, weights: dict[str, float]) -> dict[str, int]:
    """`total` split over `weights` by largest remainder (the counts add up to `total`)."""
    norm = sum(weights.values())
    exact = {k: total * w / norm for k, w in weights.items()}
    counts = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: counts[k] - exact[k])[: total - sum(counts.values())]:
        counts[k] += 1
    return counts


def counts(mixture: MixtureSpec, split: str) -> dict[str, int]:
    """How many items of `split` come from each domain pool."""
    total = mixture.sizes.get(split, 0)
    general = round(total * mixture.general_share) if split == "sft" else 0
    out = shares(total - general, mixture.sources)
    if general:
        out["general"] = out.get("general", 0) + general
    return {k: v for k, v in out.items() if v}


def mix(name: str, mixture: MixtureSpec, splits: list[str], seed: int, where: str) -> dict[str, list[dict]]:
    """The rows of each split an enabled phase trains on (`where`: the spec file, for errors)."""
    out = {}
    for split in splits:
        rows = []
        for domain, n in counts(mixture, split).items():
            pool = read_jsonl(output("prepare_data", domain, f"{split}.jsonl"))
            if n > len(pool):
                file = Specs().data.domains[domain].files.get(split)
                more = f"add rows to {file}" if file else f"raise specs/data.yaml domains.{domain}.{split}"
                raise SpecError(
                    f"{where}: mixture.sizes.{split} asks for {n} {domain} items but "
                    f"prepare_data made {len(pool)}: lower the size or {more}"
                )
            rows += random.Random(derived_seed(seed, name, domain, split)).sample(pool, n)
        random.Random(derived_seed(seed, name, split)).shuffle(rows)
        out[split] = rows
    return out
