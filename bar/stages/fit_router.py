"""Stage fit_router: train only the router of the merged MoE on a stratified sample of the
experts' SFT data (~5% each). Every other tensor is verified bit for bit unchanged.

The loss is the LM loss of the sample (the published recipe), plus the router z-loss and, with
`domain_loss` > 0, a routing term: on every token of expert i's sample, the router of each layer
is asked to route as expert i itself did, between the anchor (slot 0) and expert i only."""

from __future__ import annotations

import random
import sys

from bar.specs import Specs, spec_hash
from bar.stages import CHECKPOINTS, _training, entry, output
from bar.stages.prepare_data import derived_seed

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


def sample(experts: list[str], fraction: float, seed: int) -> list[tuple[int, object]]:
    """A stratified sample: `fraction` of each expert's SFT mixture (at least one example), as
    (the expert's slot in the merged MoE, example) pairs."""
    picked = []
    for slot, name in enumerate(experts, start=1):
        pool = _training.load_examples(output("mix_data", name, "sft.jsonl"))
        k = max(1, round(len(pool) * fraction))
        picked += [(slot, e) for e in random.Random(derived_seed(seed, STAGE, name)).sample(pool, k)]
    return picked


class DomainRouting:
    """The `domain_loss` term, added to the backward pass through Megatron-Core's aux-loss hook
    (as its z-loss is): weight * the cross-entropy between the router's probabilities and expert
    i's own routing, averaged over the tokens of expert i's sample and over layers.

    Expert i was trained as a 2-slot MoE whose router rows (anchor, i) the merge copied into rows
    0 and i; its routing of a token is the softmax of those two rows' logits, here computed with
    the rows as merged (frozen) on the merged model's hidden state: -sum_s q_s log p_s over
    s in {0, i}. `slots` (packed like `items`, so it lines up token for token) gives the slot of
    the expert whose sample each token came from (-1: padding)."""

    def __init__(self, model, items, slots: list[int], weight: float, **batching):
        from bar.train.batches import Batches

        self.weight, self.current = weight, None
        self.batches = Batches(items, **batching)
        self.slots = Batches(
            [([s] * len(ids), trained) for (ids, trained), s in zip(items, slots)], **(batching | {"pad_id": -1})
        )
        self.routers = [m for name, m in model.named_modules() if name.endswith("mlp.router")]
        self.merged = {id(r): r.weight.detach().clone() for r in self.routers}
        for router in self.routers:
            router.register_forward_hook(self.hook)

    def get(self, step: int) -> dict:
        from bar import parallel

        self.current = self.slots.get(step)["tokens"].t().reshape(-1).to(parallel.device())  # [s * b], Megatron's order
        return self.batches.get(step)

    def num_tokens(self, step: int) -> int:
        return self.batches.num_tokens(step)

    def hook(self, router, args, output):
        import torch
        from megatron.core.transformer.moe.moe_utils import MoEAuxLossAutoScaler

        if not (router.training and torch.is_grad_enabled()):
            return output
        probs, routing_map = output
        keep = self.current >= 0
        hidden = args[0].reshape(self.current.numel(), -1)[keep].float()
        slot = self.current[keep][:, None]
        logp = torch.log_softmax(router.gating(hidden).float(), dim=-1)
        with torch.no_grad():  # expert i's own routing between the anchor and itself
            own = hidden @ self.merged[id(router)].float().t()
            target = torch.softmax(torch.cat([own[:, :1], own.gather(1, slot)], dim=1), dim=-1)
        chosen = torch.cat([logp[:, :1], logp.gather(1, slot)], dim=1)
        loss = -(target * chosen).sum(-1).mean() * self.weight / len(self.routers)
        return MoEAuxLossAutoScaler.apply(probs, loss), routing_map


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
    res = resolved(specs)
    fp = _training.fingerprint(res, inputs(specs))
    parallel.init(spec.tp_size, seed)
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
        set_trainable(model, ["router"], freeze_anchor_row=False)
        items = [tokenizer.chat_ids(tok, e.prompt, e.response) for _, e in picked]
        batching = dict(batch_size=spec.batch_size, seq_length=arch.seq_length, pad_id=tok.pad_token_id, seed=seed)
        batches = Batches(items, **batching)
        if spec.domain_loss:
            batches = DomainRouting(model, items, [slot for slot, _ in picked], spec.domain_loss, **batching)
        log = train_loop(model, batches, spec, ckpt, desc=STAGE)
        after = full_state(model)
        changed = [k for k in after if ".mlp.router." not in k and not torch.equal(after[k], merged[k])]
        if changed:
            raise RuntimeError(f"{STAGE}: only the router may train, but {changed[:3]} changed")
        return log

    # The fit is kept after publishing (checkpoints/fit_router/train/final): a re-run that changes
    # only how the routed model decodes (sequence_topk) reuses it and trains nothing.
    log, reused = _training.kept_training(STAGE, model, _training.fingerprint(fitting(res), inputs(specs)), fp, fit)
    import json

    config = json.loads(output("merge_experts", "config.json").read_text())
    config |= {
        "topk": spec.topk or len(experts) + 1,
        "sequence_topk": spec.sequence_topk,
        "router_examples": len(picked),
    }
    result.finish(
        model,
        {
            "logs": {_training.DENSE_PHASE: log},
            "reused": reused,
            "eval": {},
            "config": config,
            "router_examples": len(picked),
        },
    )
    parallel.shutdown()


def main() -> None:
    from bar import tracking

    specs = Specs()
    res = resolved(specs)
    _training.run_parent(
        STAGE,
        tp_size=specs.router.tp_size,
        resolved=res,
        phases=[_training.DENSE_PHASE],
        tags={"spec_hash": spec_hash(res), "merged_hash": tracking.dvc_md5("outputs/merge_experts")},
        trainable={_training.DENSE_PHASE: ["router"]},
        extra_metrics=lambda meta: {"router_examples": meta["router_examples"]},
        register=register,
    )


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
