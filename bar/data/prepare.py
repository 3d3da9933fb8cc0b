"""Every domain's splits and the pre-training corpus, generated from seeds or loaded from the
user's files (prepare_data writes them)."""

from __future__ import annotations

import dataclasses
import random
import shutil
from pathlib import Path

from bar.data.example import derived_seed, read_examples
from bar.data.loaders import DataError, load_documents, load_examples
from bar.data.synth import documents, examples
from bar.data.verify import VERIFIER, use_verifier
from bar.files import write_json, write_jsonl
from bar.specs import SPLIT_NAMES, DataSpec


def split_rows(domain: str, split: str, spec, seed: int) -> list[dict]:
    n = getattr(spec, split)
    if split in spec.files:
        if split == "midtrain":
            return [{"text": t} for t in load_documents(spec.files[split], skip_bad_rows=spec.skip_bad_rows)]
        loaded = load_examples(spec.files[split], domain, skip_bad_rows=spec.skip_bad_rows)
        last = spec.train_turns == "last"
        return [dataclasses.replace(e, last_turn_only=last).to_json() for e in loaded]
    if n == 0:
        return []
    if split == "midtrain":
        return [{"text": t} for t in documents(domain, n, derived_seed(seed, domain, split))]
    # sft, rl and anchor all come from the train side of the domain's prompt space; eval from the other.
    side = "eval" if split == "eval" else "train"
    return [e.to_json() for e in examples(domain, side, n, derived_seed(seed, domain, split))]


def prepare(spec: DataSpec, out: Path) -> dict:
    """Write `out/pretrain.jsonl`, each domain's `out/<domain>/<split>.jsonl` (and a user domain's
    verifier) and `out/manifest.json`; returns the row count of each."""
    counts = {}
    docs = [
        t
        for domain, n in spec.pretrain.items()
        if n
        for t in documents(domain, n, derived_seed(spec.seed, domain, "pretrain"))
    ]
    random.Random(spec.seed).shuffle(docs)
    write_jsonl(out / "pretrain.jsonl", ({"text": t} for t in docs))
    counts["pretrain"] = len(docs)
    for domain, dspec in spec.domains.items():
        (out / domain).mkdir()
        if dspec.verifier:
            shutil.copyfile(dspec.verifier, out / domain / VERIFIER)
            use_verifier(domain, dspec.verifier)  # its rows' checks are the verifier's to vet
        for split in SPLIT_NAMES:
            rows = split_rows(domain, split, dspec, spec.seed)
            write_jsonl(out / domain / f"{split}.jsonl", rows)
            counts[f"{domain}/{split}"] = len(rows)
    write_json(out / "manifest.json", {"counts": counts, "spec": spec.model_dump(mode="json")})
    return counts


def check_lengths(tok, data_dir: Path, skip: dict[str, bool], seq_length: int) -> int:
    """Refuse a training conversation (anchor, sft) longer than seq_length + 1 tokens before any
    training, naming its row (DataError); in a domain with skip_bad_rows (`skip`) it is counted
    and later left out (`bar.tokenizer.example_items`). Returns how many were."""
    from bar.tokenizer import example_ids, too_long

    left_out = 0
    for domain in sorted(skip):
        for split in ("anchor", "sft"):
            path = data_dir / domain / f"{split}.jsonl"
            for line, e in enumerate(read_examples(path) if path.exists() else [], start=1):
                problem = too_long(e, len(example_ids(tok, e)[0]), seq_length, f"{path}:{line}")
                if problem and not skip[domain]:
                    raise DataError(
                        f"{problem}. Fix: shorten it, raise specs/model.yaml: seq_length, or set specs/data.yaml: "
                        f"domains.{domain}.skip_bad_rows: true to leave such rows out"
                    )
                left_out += bool(problem)
    return left_out
