"""Stage mix_data@<expert>: draw the expert's data mixture from the prepared domain pools.

Writes outputs/mix_data/<expert>/{midtrain,sft,rl}.jsonl. Each split takes `sizes[split]`
items, split over `sources` by weight; SFT also takes `general_share` of its items from the
general chat pool, so the expert keeps following instructions. Items are drawn without
replacement, deterministically from the seed and the expert's name.
"""

from __future__ import annotations

import random
import sys

from bar.specs import MixtureSpec, SpecError, Specs, spec_hash
from bar.stages import atomic_dir, entry, output, read_jsonl, write_json, write_jsonl, write_metrics
from bar.stages.prepare_data import derived_seed

STAGE = "mix_data"


def shares(total: int, weights: dict[str, float]) -> dict[str, int]:
    """`total` split over `weights` by largest remainder (the counts add up to `total`)."""
    norm = sum(weights.values())
    exact = {k: total * w / norm for k, w in weights.items()}
    counts = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: counts[k] - exact[k])[: total - sum(counts.values())]:
        counts[k] += 1
    return counts


def plan(mixture: MixtureSpec, split: str) -> dict[str, int]:
    """How many items of `split` come from each domain pool."""
    total = mixture.sizes.get(split, 0)
    general = round(total * mixture.general_share) if split == "sft" else 0
    counts = shares(total - general, mixture.sources)
    if general:
        counts["general"] = counts.get("general", 0) + general
    return {k: v for k, v in counts.items() if v}


def mix(name: str, mixture: MixtureSpec, splits: list[str], seed: int, where: str) -> dict[str, list[dict]]:
    """The rows of each split an enabled stage trains on."""
    out = {}
    for split in splits:
        rows = []
        for domain, n in plan(mixture, split).items():
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


def main(name: str) -> None:
    from bar import tracking

    specs = Specs()
    spec = specs.expert(name)
    run_name = f"{STAGE}@{name}"
    resolved = {
        "mixture": spec.mixture.model_dump(mode="json"),
        "phases": spec.phases.enabled(),
        "seed": specs.params.seed,
    }
    with tracking.stage_run(
        run_name,
        spec=resolved,
        tags={
            "expert": name,
            "expert_version": str(spec.version),
            "spec_hash": spec_hash(resolved),
            "data_hash": tracking.dvc_md5("outputs/prepare_data"),
        },
    ) as run:
        needed = ["rl" if phase == "rlvr" else phase for phase in spec.phases.enabled()]
        splits = mix(name, spec.mixture, needed, specs.params.seed, str(specs.path(f"experts/{name}")))
        with atomic_dir(output(STAGE, name)) as out:
            for split, rows in splits.items():
                write_jsonl(out / f"{split}.jsonl", rows)
            write_json(out / "manifest.json", {s: plan(spec.mixture, s) for s in splits})
        metrics = {f"count/{s}": len(rows) for s, rows in splits.items()}
        run.log_metrics(metrics)
        write_metrics(f"{STAGE}/{name}", metrics)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m bar.stages.mix_data <expert> (one of specs/experts/*.yaml)")
    entry(main, sys.argv[1])
