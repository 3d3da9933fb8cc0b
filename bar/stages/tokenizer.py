"""Stage tokenizer: train the byte-level BPE on the prepared corpus; save it as a transformers tokenizer.

The corpus is every document and every chat example of every built-in domain (so domain words
get merges; `bar.tokenizer.corpus`), but the tool-call markers are special tokens, not learned
merges. With a base model of the user's (`specs/model.yaml: base`), its tokenizer instead, with
bar's special tokens added (`bar.tokenizer.adapt`). A training conversation longer than a
training row is refused here, before any training, unless its domain skips bad rows.
"""

from __future__ import annotations

from bar.files import atomic_dir, output, read_jsonl, write_metrics
from bar.specs import Specs
from bar.stages import entry

STAGE = "tokenizer"


def main() -> None:
    from bar import tokenizer, tracking
    from bar.data.prepare import check_lengths
    from bar.specs import spec_hash

    specs = Specs()
    spec, vocab_size, base = specs.tokenizer, specs.model.vocab_size, specs.model.base
    resolved = {"tokenizer": spec.model_dump(mode="json"), "vocab_size": vocab_size, "base": base}
    data_dir = output("prepare_data")
    with tracking.stage_run(
        STAGE, spec=resolved, tags={"spec_hash": spec_hash(resolved), "data_hash": tracking.dvc_md5(str(data_dir))}
    ) as run:
        if base:
            tok = tokenizer.adapt(base)
        else:
            tok = tokenizer.train(tokenizer.corpus(data_dir), vocab_size, spec.min_frequency, spec.num_reserved_tokens)
        skip = {domain: d.skip_bad_rows for domain, d in specs.data.domains.items()}
        left_out = check_lengths(tok, data_dir, skip, specs.model.seq_length)
        with atomic_dir(output(STAGE)) as out:
            tok.save_pretrained(out)
        docs = [r["text"] for r in read_jsonl(data_dir / "pretrain.jsonl")[:1000]]
        lengths = [len(tok.encode(d, add_special_tokens=False)) for d in docs]
        metrics = {
            "vocab_size": len(tok),
            "tokens_per_document": sum(lengths) / max(1, len(lengths)),
            "chars_per_token": sum(map(len, docs)) / max(1, sum(lengths)),
            "conversations_too_long": left_out,
        }
        run.log_metrics(metrics)
        write_metrics(STAGE, metrics)


if __name__ == "__main__":
    entry(main)
