"""Stage train_anchor: supervised fine-tuning of the base on general chat and each domain's
`anchor` split, the skills a general instruction mix carries a little of (assistant tokens only);
or, with an anchor of the user's (`specs/model.yaml: anchor`), that model imported and scored."""

from __future__ import annotations

import sys

from bar.files import output
from bar.specs import Specs, spec_hash
from bar.stages import entry

STAGE = "train_anchor"


def resolved(specs: Specs) -> dict:
    return {
        "model": specs.model.model_dump(mode="json"),
        "train": specs.train.anchor.model_dump(mode="json"),
        "eval": specs.eval.model_dump(mode="json"),
        "seed": specs.params.seed,
    }


def sft_files() -> list:
    """General chat, then each domain's `anchor` rows (domains without any left out)."""
    anchor = [f for f in sorted(output("prepare_data").glob("*/anchor.jsonl")) if f.stat().st_size]
    return [output("prepare_data", "general", "sft.jsonl"), *anchor]


def train_inputs() -> list:
    return [*sft_files(), output("tokenizer"), output("pretrain_base", "model.safetensors")]


def import_worker(specs: Specs) -> None:
    """The user's anchor imported and scored on every domain; no training."""
    from pathlib import Path

    from bar.runner import run_import_worker
    from bar.scoring import eval_files
    from bar.train.checkpoint import fingerprint

    anchor = Path(specs.model.anchor)
    run_import_worker(
        STAGE,
        arch=specs.model,
        train=specs.train.anchor,
        seed=specs.params.seed,
        folder=anchor,
        eval_domains=sorted(specs.data.domains),
        eval_spec=specs.eval,
        fingerprint=fingerprint(resolved(specs), [output("tokenizer"), anchor, *eval_files()]),
    )


def worker(specs: Specs) -> None:
    from bar import tokenizer
    from bar.data.example import read_examples
    from bar.runner import run_dense_worker
    from bar.scoring import eval_files
    from bar.train.checkpoint import fingerprint, without_eval

    tok = tokenizer.load(output("tokenizer"))
    examples = [e for path in sft_files() for e in read_examples(path)]
    items = [ids for _, ids in tokenizer.example_items(tok, examples, specs.model.seq_length)]
    run_dense_worker(
        STAGE,
        arch=specs.model,
        train=specs.train.anchor,
        seed=specs.params.seed,
        items=items,
        init=output("pretrain_base"),
        eval_domains=sorted(specs.data.domains),
        eval_spec=specs.eval,
        fingerprint=fingerprint(resolved(specs), [*train_inputs(), *eval_files()]),
        train_fingerprint=fingerprint(without_eval(resolved(specs)), train_inputs()),
    )


def main() -> None:
    from pathlib import Path

    from bar import tracking
    from bar.runner import DENSE_PHASE, run_parent
    from bar.train.checkpoint import file_digest

    specs = Specs()
    spec = resolved(specs)
    anchor = specs.model.anchor
    run_parent(
        STAGE,
        __spec__.name,
        worker=lambda: work(specs),
        nproc=specs.train.anchor.tp_size * specs.train.anchor.dp_size,
        resolved=spec,
        phases=None if anchor else [DENSE_PHASE],  # an imported anchor trains nothing
        tags={
            "spec_hash": spec_hash(spec),
            "data_hash": tracking.dvc_md5("outputs/prepare_data"),
            "base_hash": tracking.dvc_md5("outputs/pretrain_base"),
            **({"anchor_data_hash": file_digest(Path(anchor))} if anchor else {}),
        },
    )


def work(specs: Specs) -> None:
    (import_worker if specs.model.anchor else worker)(specs)


if __name__ == "__main__":
    entry(lambda: work(Specs()) if "--worker" in sys.argv else main())
