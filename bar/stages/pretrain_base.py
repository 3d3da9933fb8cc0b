"""Stage pretrain_base: language modelling on the general pre-training corpus, from scratch; or,
with a base model of the user's (`specs/model.yaml: base`), that model imported.

The tokenizer's special tokens that the corpus never contains (the chat markers, the tool-call
markers, the reserved tokens) are, for the base, tokens added after pre-training: their
embedding and LM-head rows are the mean of the others' (`bar.model.init_added_tokens`), as
`transformers` initialises added tokens. The anchor learns the chat markers; only the
tool-use expert sees `<tool_call>`/`</tool_call>`, and it can tell them apart only by training
its embeddings and LM head (the published finding the frozen-embeddings ablation tests).
An imported base gets the same treatment for the special tokens its tokenizer lacked.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bar.files import output, read_jsonl
from bar.specs import Specs, spec_hash
from bar.stages import entry

STAGE = "pretrain_base"


def resolved(specs: Specs) -> dict:
    return {
        "model": specs.model.model_dump(mode="json"),
        "train": specs.train.pretrain.model_dump(mode="json"),
        "eval": specs.eval.model_dump(mode="json"),
        "seed": specs.params.seed,
    }


def inputs(specs: Specs) -> list:
    base = [Path(specs.model.base)] if specs.model.base else []
    return [output("prepare_data", "pretrain.jsonl"), output("tokenizer"), *base]


def worker(specs: Specs) -> None:
    from bar import tokenizer
    from bar.runner import run_dense_worker
    from bar.train.checkpoint import fingerprint, without_eval

    tok = tokenizer.load(output("tokenizer"))
    items = [tokenizer.document_ids(tok, r["text"]) for r in read_jsonl(output("prepare_data", "pretrain.jsonl"))]
    seen = {i for ids, _ in items for i in ids}
    run_dense_worker(
        STAGE,
        arch=specs.model,
        train=specs.train.pretrain,
        seed=specs.params.seed,
        items=items,
        init=None,
        eval_domains=["general"],
        eval_spec=specs.eval,
        fingerprint=fingerprint(resolved(specs), inputs(specs)),
        train_fingerprint=fingerprint(without_eval(resolved(specs)), inputs(specs)),
        added_tokens=sorted(set(tok.all_special_ids) - seen),
    )


def import_worker(specs: Specs) -> None:
    """The user's base imported and scored like a pre-trained base; no training."""
    from bar.runner import run_import_worker
    from bar.train.checkpoint import fingerprint

    run_import_worker(
        STAGE,
        arch=specs.model,
        train=specs.train.pretrain,
        seed=specs.params.seed,
        folder=Path(specs.model.base),
        eval_domains=["general"],
        eval_spec=specs.eval,
        fingerprint=fingerprint(resolved(specs), inputs(specs)),
    )


def main() -> None:
    from bar import tracking
    from bar.runner import DENSE_PHASE, run_parent
    from bar.train.checkpoint import file_digest

    specs = Specs()
    spec = resolved(specs)
    base = {"base_data_hash": file_digest(Path(specs.model.base))} if specs.model.base else {}
    phases = None if specs.model.base else [DENSE_PHASE]  # an imported base trains nothing
    run_parent(
        STAGE,
        __spec__.name,
        worker=lambda: work(specs),
        nproc=specs.train.pretrain.tp_size * specs.train.pretrain.dp_size,
        resolved=spec,
        phases=phases,
        tags={
            "spec_hash": spec_hash(spec),
            "data_hash": tracking.dvc_md5("outputs/prepare_data"),
            "tokenizer_hash": tracking.dvc_md5("outputs/tokenizer"),
            **base,
        },
    )


def work(specs: Specs) -> None:
    (import_worker if specs.model.base else worker)(specs)


if __name__ == "__main__":
    entry(lambda: work(Specs()) if "--worker" in sys.argv else main())
