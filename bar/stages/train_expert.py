"""Stage train_expert@<expert>: branch from the anchor, adapt through the expert's stages.

Branch: a 2-slot MoE per layer, slot 0 the anchor's FFN (never trained), slot 1 the
pre-trained base's FFN, everything else from the anchor. Adapt: the enabled stages of
`specs/experts/<expert>.yaml` in order (midtrain -> sft -> rlvr), each training only its
`trainable` groups. Each finished phase is kept in `checkpoints/train_expert/<expert>/<phase>/final`,
so a re-run resumes inside the phase it was killed in. The anchor FFN is verified bit for
bit before the expert is published; the expert is scored on every domain's eval split.
"""

from __future__ import annotations

import sys

from bar.specs import Specs, spec_hash
from bar.stages import CHECKPOINTS, entry, output
from bar.stages import _training

STAGE = "train_expert"


def resolved(specs: Specs, name: str) -> dict:
    return {"expert": specs.expert(name).model_dump(mode="json"), "model": specs.model.model_dump(mode="json"),
            "eval": specs.eval.model_dump(mode="json"), "seed": specs.params.seed}


def inputs(name: str) -> list:
    return [output("mix_data", name), output("tokenizer"), output("train_anchor", "model.safetensors"),
            output("pretrain_base", "model.safetensors")]


def phase_items(tok, name: str, phase: str) -> list:
    from bar import tokenizer

    if phase == "midtrain":
        from bar.stages import read_jsonl

        return [tokenizer.document_ids(tok, r["text"]) for r in read_jsonl(output("mix_data", name, "midtrain.jsonl"))]
    examples = _training.load_examples(output("mix_data", name, f"{'rl' if phase == 'rlvr' else phase}.jsonl"))
    if phase == "sft":
        return [tokenizer.chat_ids(tok, e.prompt, e.response) for e in examples]
    return examples


def worker(specs: Specs, name: str) -> None:
    import copy

    import torch
    from safetensors.torch import load_file

    from bar import parallel, tokenizer
    from bar.model import build
    from bar.model.moe import anchor_ffn, set_trainable, upcycle
    from bar.train import rlvr
    from bar.train import train as train_loop
    from bar.train.batches import Batches
    from bar.train.checkpoint import Resumable, full_state, load_state

    spec, arch, seed = specs.expert(name), specs.model, specs.params.seed
    fp = _training.fingerprint(resolved(specs, name), inputs(name))
    parallel.init(spec.tp_size, seed)
    root = CHECKPOINTS / STAGE / name
    expert = Resumable(root, fp)
    if expert.finished():
        parallel.shutdown()
        return
    tok = tokenizer.load(output("tokenizer"))
    anchor = load_file(output("train_anchor", "model.safetensors"))
    model = build(arch, spec.tp_size, num_experts=2)
    load_state(model, upcycle(anchor, load_file(output("pretrain_base", "model.safetensors")), arch.num_layers))

    logs = {}
    for i, phase in enumerate(spec.stages.enabled()):
        phase_spec = getattr(spec.stages, phase)
        ckpt = Resumable(root / phase, f"{fp}:{phase}")
        done = ckpt.finished()
        if done:
            ckpt.load_finished(model)
            logs[phase] = done["log"]
            continue
        set_trainable(model, phase_spec.trainable)
        desc = f"{STAGE}@{name} {phase}"
        phase_seed = seed * 10 + i
        items = phase_items(tok, name, phase)
        if phase == "rlvr":
            reference = None
            if phase_spec.kl_coef > 0:
                reference = copy.deepcopy(model).eval()
                reference.requires_grad_(False)
            logs[phase] = rlvr.train(model, reference, items, tok, phase_spec, phase_seed, ckpt, desc)
        else:
            batches = Batches(items, batch_size=phase_spec.batch_size, seq_length=arch.seq_length,
                              pad_id=tok.pad_token_id, seed=phase_seed)
            logs[phase] = train_loop(model, batches, phase_spec, ckpt, desc)
        ckpt.finish(model, {"log": logs[phase]})

    state = full_state(model)
    changed = [k for k, v in anchor_ffn(state).items() if not torch.equal(v, anchor[k])]
    if changed:
        raise RuntimeError(f"{STAGE}@{name}: the anchor FFN changed in {changed[:3]}: it must stay frozen")
    scores = _training.score_all(model, tok, sorted(specs.data.domains), specs.eval)
    config = {"kind": "moe", "arch": arch.model_dump(), "vocab": len(tok), "num_experts": 2,
              "experts": ["anchor", name], "expert": name, "version": spec.version, "domain": spec.domain,
              # What merging checks: experts must share their anchor and tokenizer.
              "anchor_sha256": _training.file_digest(output("train_anchor", "model.safetensors")),
              "tokenizer_sha256": _training.file_digest(output("tokenizer"))}
    expert.finish(model, {"logs": logs, "eval": scores, "config": config, "anchor_ffn_unchanged": True})
    parallel.shutdown()


def main(name: str) -> None:
    from bar import tracking

    specs = Specs()
    spec = specs.expert(name)
    res = resolved(specs, name)
    _training.run_parent(STAGE, item=name, tp_size=spec.tp_size, resolved=res, tags={
        "expert": name, "expert_version": str(spec.version), "domain": spec.domain,
        "spec_hash": spec_hash(res), "data_hash": tracking.dvc_md5(f"outputs/mix_data/{name}"),
        "anchor_hash": tracking.dvc_md5("outputs/train_anchor"),
        "base_hash": tracking.dvc_md5("outputs/pretrain_base")},
        extra_metrics=lambda meta: {"anchor_ffn_unchanged": float(meta["anchor_ffn_unchanged"])},
        register=lambda run, out: register(run, out, name, spec.version, spec_hash(res)))


def register(run, out, name: str, version: int, spec_digest: str) -> None:
    """`bar-expert-<name>`: one registered version per trained expert version."""
    from bar.train.checkpoint import sha256

    run.register_model(f"bar-expert-{name}", out / "hf", {
        "expert": name, "expert_version": version, "spec_hash": spec_digest,
        "sha256": sha256(out / "model.safetensors")})


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--worker"]
    if len(args) != 1:
        raise SystemExit(f"usage: python -m bar.stages.{STAGE} <expert> (one of specs/experts/*.yaml)")
    entry(lambda: worker(Specs(), args[0]) if "--worker" in sys.argv else main(args[0]))
