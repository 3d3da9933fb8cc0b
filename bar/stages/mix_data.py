"""Stage mix_data@<expert>: draw the expert's data mixture from the prepared domain pools.

Writes outputs/mix_data/<expert>/{midtrain,sft,rl}.jsonl, the splits its enabled phases train
on (`bar.data.mixture`), and manifest.json (how many items of each split came from each pool).
"""

from __future__ import annotations

import sys

from bar.files import atomic_dir, output, write_json, write_jsonl, write_metrics
from bar.specs import Specs, spec_hash, split_of
from bar.stages import entry

STAGE = "mix_data"


def main(name: str) -> None:
    from bar import tracking
    from bar.data.mixture import counts, mix

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
        needed = [split_of(phase) for phase in spec.phases.enabled()]
        splits = mix(name, spec.mixture, needed, specs.params.seed, str(specs.path(f"experts/{name}")))
        with atomic_dir(output(STAGE, name)) as out:
            for split, rows in splits.items():
                write_jsonl(out / f"{split}.jsonl", rows)
            write_json(out / "manifest.json", {s: counts(spec.mixture, s) for s in splits})
        metrics = {f"count/{s}": len(rows) for s, rows in splits.items()}
        run.log_metrics(metrics)
        write_metrics(f"{STAGE}/{name}", metrics)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m bar.stages.mix_data <expert> (one of specs/experts/*.yaml)")
    entry(main, sys.argv[1])
