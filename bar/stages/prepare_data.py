"""Stage prepare_data: generate (or load) every domain's splits and the pre-training corpus.

Writes outputs/prepare_data/pretrain.jsonl ({"text"} documents) and, per domain,
outputs/prepare_data/<domain>/{midtrain,sft,rl,anchor,eval}.jsonl (and a user domain's
verifier.py, the copy the later stages score with), plus manifest.json.
"""

from __future__ import annotations

import hashlib
import random
import shutil

from bar.specs import SPLIT_NAMES, Specs
from bar.stages import atomic_dir, entry, output, write_json, write_jsonl, write_metrics

STAGE = "prepare_data"


def derived_seed(seed: int, *names: str) -> int:
    """Independent, reproducible seeds per (domain, split): never Python's salted hash()."""
    digest = hashlib.sha256(":".join([str(seed), *names]).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def split_rows(domain: str, split: str, spec, seed: int) -> list[dict]:
    from bar import data

    n = getattr(spec, split)
    if split in spec.files:
        if split == "midtrain":
            return [{"text": t} for t in data.load_documents(spec.files[split], skip_bad_rows=spec.skip_bad_rows)]
        return [e.to_json() for e in data.load_examples(spec.files[split], domain, skip_bad_rows=spec.skip_bad_rows)]
    if n == 0:
        return []
    if split == "midtrain":
        return [{"text": t} for t in data.documents(domain, n, derived_seed(seed, domain, split))]
    # sft, rl and anchor all come from the train side of the domain's prompt space; eval from the other.
    side = "eval" if split == "eval" else "train"
    return [e.to_json() for e in data.examples(domain, side, n, derived_seed(seed, domain, split))]


def prepare(spec, out) -> dict:
    from bar import data

    counts = {}
    docs = [
        t
        for domain, n in spec.pretrain.items()
        if n
        for t in data.documents(domain, n, derived_seed(spec.seed, domain, "pretrain"))
    ]
    random.Random(spec.seed).shuffle(docs)
    write_jsonl(out / "pretrain.jsonl", ({"text": t} for t in docs))
    counts["pretrain"] = len(docs)
    for domain, dspec in spec.domains.items():
        (out / domain).mkdir()
        if dspec.verifier:
            shutil.copyfile(dspec.verifier, out / domain / data.VERIFIER)
            data.use_verifier(domain, dspec.verifier)  # its rows' checks are the verifier's to vet
        for split in SPLIT_NAMES:
            rows = split_rows(domain, split, dspec, spec.seed)
            write_jsonl(out / domain / f"{split}.jsonl", rows)
            counts[f"{domain}/{split}"] = len(rows)
    write_json(out / "manifest.json", {"counts": counts, "spec": spec.model_dump(mode="json")})
    return counts


def main() -> None:
    from bar import tracking
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
