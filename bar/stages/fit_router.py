"""Stage fit_router: train the router of the merged MoE on a stratified sample of the experts' SFT
data (~5% each). Only the router trains in the published recipe; `trainable` may add shared
tensors (the merge's mean of the experts' changes, fitted to every domain at once). Every other
tensor is verified bit for bit unchanged.

The loss is the LM loss of the sample (the published recipe), plus the router z-loss and, with
`domain_loss` > 0, a routing term (`bar.router.DomainRouting`): on every token of expert i's
sample, the router of each layer is asked to route as expert i itself did, between the anchor
(slot 0) and expert i only."""

from __future__ import annotations

import json
import sys

from bar.files import CHECKPOINTS, output
from bar.specs import Specs, spec_hash
from bar.stages import entry

STAGE = "fit_router"


def resolved(specs: Specs) -> dict:
    return {
        "router": specs.router.model_dump(mode="json"),
        "experts": specs.params.experts,
        "model": specs.model.model_dump(mode="json"),
        "seed": specs.params.seed,
    }


def fitting(resolved: dict) -> dict:
    """What the fitted router depends on: not `sequence_topk` (how the routed model decodes)."""
    return resolved | {"router": {k: v for k, v in resolved["router"].items() if k != "sequence_topk"}}


def inputs(specs: Specs) -> list:
    return [
        output("merge_experts", "model.safetensors"),
        output("tokenizer"),
        *[output("mix_data", e, "sft.jsonl") for e in specs.params.experts],
    ]


def worker(specs: Specs) -> None:
    import torch
    from safetensors.torch import load_file

    from bar import parallel, tokenizer
    from bar.model import build
    from bar.model.moe import group_of, set_trainable
    from bar.router import DomainRouting, sample
    from bar.runner import DENSE_PHASE, kept_training
    from bar.train import train as train_loop
    from bar.train.batches import Batches
    from bar.train.checkpoint import Resumable, fingerprint, full_state, load_state

    spec, arch, seed, experts = specs.router, specs.model, specs.params.seed, specs.params.experts
    res = resolved(specs)
    fp = fingerprint(res, inputs(specs))
    parallel.init(spec.tp_size, seed, spec.dp_size)
    result = Resumable(CHECKPOINTS / STAGE, fp)
    if result.finished():
        parallel.shutdown()
        return
    tok = tokenizer.load(output("tokenizer"))
    merged = load_file(output("merge_experts", "model.safetensors"))
    model = build(
        arch,
        spec.tp_size,
        num_experts=len(experts) + 1,
        topk=spec.topk,
        z_loss=spec.z_loss,
        load_balancing=spec.load_balancing,
    )
    picked = sample(experts, spec.sample_fraction, seed)

    def fit(ckpt) -> list:
        load_state(model, merged)
        set_trainable(model, spec.trainable, freeze_anchor_row=False)
        kept = tokenizer.example_items(tok, [e for _, e in picked], arch.seq_length)
        items, slots = [ids for _, ids in kept], [picked[i][0] for i, _ in kept]
        batching = dict(batch_size=spec.batch_size, seq_length=arch.seq_length, pad_id=tok.pad_token_id, seed=seed)
        batches = Batches(items, **batching)
        if spec.domain_loss:
            batches = DomainRouting(model, items, slots, spec.domain_loss, **batching)
        log = train_loop(
            model, batches, spec, ckpt, desc=STAGE, lr_scale=spec.lr_scale, micro_batch_size=spec.micro_batch_size
        )
        after = full_state(model)
        changed = [k for k in after if group_of(k) not in spec.trainable and not torch.equal(after[k], merged[k])]
        if changed:
            raise RuntimeError(f"{STAGE}: only {spec.trainable} may train, but {changed[:3]} changed")
        return log

    # The fit is kept after publishing (checkpoints/fit_router/train/final): a re-run that changes
    # only how the routed model decodes (sequence_topk) reuses it and trains nothing.
    log, reused = kept_training(STAGE, model, fingerprint(fitting(res), inputs(specs)), fp, fit)
    config = json.loads(output("merge_experts", "config.json").read_text())
    config |= {
        "topk": spec.topk or len(experts) + 1,
        "sequence_topk": spec.sequence_topk,
        "router_examples": len(picked),
    }
    result.finish(
        model,
        {
            "logs": {DENSE_PHASE: log},
            "reused": reused,
            "eval": {},
            "config": config,
            "router_examples": len(picked),
        },
    )
    parallel.shutdown()


def main() -> None:
    from bar import tracking
    from bar.runner import DENSE_PHASE, run_parent

    specs = Specs()
    res = resolved(specs)
    run_parent(
        STAGE,
        __spec__.name,
        worker=lambda: worker(specs),
        nproc=specs.router.tp_size * specs.router.dp_size,
        resolved=res,
        phases=[DENSE_PHASE],
        tags={"spec_hash": spec_hash(res), "merged_hash": tracking.dvc_md5("outputs/merge_experts")},
        trainable={DENSE_PHASE: specs.router.trainable},
        extra_metrics=lambda meta: {"router_examples": meta["router_examples"]},
        register=register,
    )


def register(run, out) -> None:
    """`bar-moe`: one registered version per routed model, tagged with its component experts'
    registered versions and run ids (found by the content hash the merge recorded)."""
    from bar import tracking
    from bar.train.checkpoint import sha256

    components = json.loads((out / "config.json").read_text())["components"]
    tags = {}
    for c in components:
        expert = tracking.model_version_with(f"bar-expert-{c['name']}", "sha256", c["sha256"])
        tags |= {
            f"expert.{c['name']}.version": c["version"],
            f"expert.{c['name']}.model_version": expert.version if expert else "unregistered",
            f"expert.{c['name']}.run_id": expert.run_id if expert else "unregistered",
        }
    tags["sha256"] = sha256(out / "model.safetensors")
    tags["components"] = ",".join(f"{c['name']}:v{c['version']}" for c in components)
    run.register_model("bar-moe", out / "hf", tags)


if __name__ == "__main__":
    entry(lambda: worker(Specs()) if "--worker" in sys.argv else main())
