"""Stage pretrain_base: language modelling on the general pre-training corpus, from scratch.

The tokenizer's special tokens that the corpus never contains (the chat markers, the tool-call
markers, the reserved tokens) are, for the base, tokens added after pre-training: their
embedding and LM-head rows are the mean of the others' (`bar.model.init_added_tokens`), as
`transformers` initialises added tokens. The anchor learns the chat markers; only the
tool-use expert sees `<tool_call>`/`</tool_call>`, and it can tell them apart only by training
its embeddings and LM head (the published finding the frozen-embeddings ablation tests).
"""

from __future__ import annotations

import sys

from bar.specs import Specs, spec_hash
from bar.stages import entry, output, read_jsonl
from bar.stages import _training

STAGE = "pretrain_base"


def resolved(specs: Specs) -> dict:
    return {"model": specs.model.model_dump(mode="json"), "train": specs.train.pretrain.model_dump(mode="json"),
            "eval": specs.eval.model_dump(mode="json"), "seed": specs.params.seed}


def inputs() -> list:
    return [output("prepare_data", "pretrain.jsonl"), output("tokenizer")]


def worker(specs: Specs) -> None:
    from bar import tokenizer

    tok = tokenizer.load(output("tokenizer"))
    items = [tokenizer.document_ids(tok, r["text"]) for r in read_jsonl(output("prepare_data", "pretrain.jsonl"))]
    seen = {i for ids, _ in items for i in ids}
    _training.run_dense_worker(STAGE, arch=specs.model, train=specs.train.pretrain, seed=specs.params.seed,
                         items=items, init=None, eval_domains=["general"], eval_spec=specs.eval,
                         fingerprint=_training.fingerprint(resolved(specs), inputs()),
                               added_tokens=sorted(set(tok.all_special_ids) - seen))


def main() -> None:
    from bar import tracking

    specs = Specs()
    spec = resolved(specs)
    _training.run_parent(STAGE, tp_size=specs.train.pretrain.tp_size, resolved=spec, tags={
        "spec_hash": spec_hash(spec), "data_hash": tracking.dvc_md5("outputs/prepare_data"),
        "tokenizer_hash": tracking.dvc_md5("outputs/tokenizer")})


if __name__ == "__main__":
    entry(lambda: worker(Specs()) if "--worker" in sys.argv else main())
