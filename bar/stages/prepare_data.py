"""Stage prepare_data: generate (or load) every domain's splits and the pre-training corpus.

Writes outputs/prepare_data/pretrain.jsonl ({"text"} documents) and, per domain,
outputs/prepare_data/<domain>/{midtrain,sft,rl,anchor,eval}.jsonl (and a user domain's
verifier.py, the copy the later stages score with), plus manifest.json (`bar.data.prepare`).
"""

from __future__ import annotations

from bar.files import atomic_dir, output, write_metrics
from bar.specs import Specs
from bar.stages import entry

STAGE = "prepare_data"


def main() -> None:
    from bar import tracking
    from bar.data.prepare import prepare
    from bar.specs import spec_hash

    specs = Specs()
    spec = specs.data
    with tracking.stage_run(STAGE, spec=spec.model_dump(mode="json"), tags={"spec_hash": spec_hash(spec)}) as run:
        with atomic_dir(output(STAGE)) as out:
            counts = prepare(spec, out)
        metrics = {f"count/{k}": v for k, v in counts.items()}
        run.log_metrics(metrics)
        write_metrics(STAGE, metrics)


if __name__ == "__main__":
    entry(main)
