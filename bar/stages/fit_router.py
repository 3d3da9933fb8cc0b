"""Stage fit_router: train only the router of the merged MoE on a stratified sample of the
experts' SFT data (~5% each). Every other tensor is verified bit for bit unchanged."""

from __future__ import annotations

import random
import sys

from bar.specs import Specs, spec_hash
from bar.stages import CHECKPOINTS, entry, output
from bar.stages import _training
from bar.stages.prepare_data import derived_seed

STAGE = "fit_router"


def resolved(specs: Specs) -> dict:
    return {"router": specs.router.model_dump(mode="json"), "experts": specs.params.experts,
            "model": specs.model.model_dump(mode="json"), "seed": specs.params.seed}


def inputs(specs: Specs) -> list:
    return [output("merge_experts", "model.safetensors"), output("tokenizer"),
            *[output("mix_data", e, "sft.jsonl") for e in specs.params.experts]]


def sample(experts: list[str], fraction: float, seed: int) -> list:
    """A stratified sample: `fraction` of each expert's SFT mixture (at least one example)."""
    picked = []
    for name in experts:
        pool = _training.load_examples(output("mix_data", name, "sft.jsonl"))
        k = max(1, round(len(pool) * fraction))
        picked += random.Random(derived_seed(seed, STAGE, name)).sample(pool, k)
    return picked


def worker(specs: Specs) -> None:
    import torch
    from safetensors.torch import load_file

    from bar import parallel, tokenizer
    from bar.model import build
    from bar.model.moe import set_trainable
    from bar.train import train as train_loop
    from bar.train.batches import Batches
    from bar.train.checkpoint import Resumable, full_state, load_state

    spec, arch, seed, experts = specs.router, specs.model, specs.params.seed, specs.params.experts
    fp = _training.fingerprint(resolved(specs), inputs(specs))
    parallel.init(spec.tp_size, seed)
    ckpt = Resumable(CHECKPOINTS / STAGE, fp)
    if ckpt.finished():
        parallel.shutdown()
        return
    tok = tokenizer.load(output("tokenizer"))
    merged = load_file(output("merge_experts", "model.safetensors"))
    model = build(arch, spec.tp_size, num_experts=len(experts) + 1, topk=spec.topk, z_loss=spec.z_loss,
                  load_balancing=spec.load_balancing)
    load_state(model, merged)
    set_trainable(model, ["router"], freeze_anchor_row=False)
    items = [tokenizer.chat_ids(tok, e.prompt, e.response) for e in sample(experts, spec.sample_fraction, seed)]
    batches = Batches(items, batch_size=spec.batch_size, seq_length=arch.seq_length,
                      pad_id=tok.pad_token_id, seed=seed)
    log = train_loop(model, batches, spec, ckpt, desc=STAGE)
    after = full_state(model)
    changed = [k for k in after if ".mlp.router." not in k and not torch.equal(after[k], merged[k])]
    if changed:
        raise RuntimeError(f"{STAGE}: only the router may train, but {changed[:3]} changed")
    import json

    config = json.loads(output("merge_experts", "config.json").read_text())
    config |= {"topk": spec.topk or len(experts) + 1, "router_examples": len(items)}
    ckpt.finish(model, {"logs": {"train": log}, "eval": {}, "config": config, "router_examples": len(items)})
    parallel.shutdown()


def main() -> None:
    from bar import tracking

    specs = Specs()
    res = resolved(specs)
    _training.run_parent(STAGE, tp_size=specs.router.tp_size, resolved=res, tags={
        "spec_hash": spec_hash(res), "merged_hash": tracking.dvc_md5("outputs/merge_experts")},
        trainable={"train": ["router"]},
        extra_metrics=lambda meta: {"router_examples": meta["router_examples"]}, register=register)


def register(run, out) -> None:
    """`bar-moe`: one registered version per routed model, tagged with its component experts'
    registered versions and run ids (found by the content hash the merge recorded)."""
    import json

    from bar import tracking
    from bar.train.checkpoint import sha256

    components = json.loads((out / "config.json").read_text())["components"]
    tags = {}
    for c in components:
        expert = tracking.model_version_with(f"bar-expert-{c['name']}", "sha256", c["sha256"])
        tags |= {f"expert.{c['name']}.version": c["version"],
                 f"expert.{c['name']}.model_version": expert.version if expert else "unregistered",
                 f"expert.{c['name']}.run_id": expert.run_id if expert else "unregistered"}
    tags["sha256"] = sha256(out / "model.safetensors")
    tags["components"] = ",".join(f"{c['name']}:v{c['version']}" for c in components)
    run.register_model("bar-moe", out / "hf", tags)


if __name__ == "__main__":
    entry(lambda: worker(Specs()) if "--worker" in sys.argv else main())
