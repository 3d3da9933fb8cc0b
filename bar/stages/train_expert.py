"""Stage train_expert@<expert>: branch from the anchor, adapt through the expert's stages.

Branch: a 2-slot MoE per layer, slot 0 the anchor's FFN (never trained), slot 1 the
pre-trained base's FFN, everything else from the anchor. Adapt: the enabled stages of
`specs/experts/<expert>.yaml` in order (midtrain -> sft -> rlvr), each training only its
`trainable` groups. Each finished phase is kept in `checkpoints/train_expert/<expert>/<phase>/final`,
so a re-run resumes inside the phase it was killed in, and a new version of the expert that
changes only later phases (say, more RLVR steps) starts from the last phase it shares with
the previous version: training is deterministic, so the shared phases would come out the
same bit for bit. The run's cost counts only the phases it trained. The anchor FFN is
verified bit for bit before the expert is published; the expert is scored on every domain's
eval split.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from bar.specs import LMPhaseSpec, RLVRSpec, Specs, spec_hash
from bar.stages import CHECKPOINTS, _training, entry, output

STAGE = "train_expert"


def resolved(specs: Specs, name: str) -> dict:
    return {
        "expert": specs.expert(name).model_dump(mode="json"),
        "model": specs.model.model_dump(mode="json"),
        "eval": specs.eval.model_dump(mode="json"),
        "seed": specs.params.seed,
    }


def model_inputs() -> list[Path]:
    """What every expert (and baseline) starts from: the tokenizer, the anchor and the base."""
    return [
        output("tokenizer"),
        output("train_anchor", "model.safetensors"),
        output("pretrain_base", "model.safetensors"),
    ]


@dataclass
class Phase:
    """One training phase: `phase` (midtrain, sft, rlvr) with `spec`, on the data in `data`."""

    label: str  # its name in logs, metrics and checkpoints: the phase, or `<phase>.<expert>` in baselines
    phase: str
    spec: LMPhaseSpec | RLVRSpec
    data: list[Path]
    # The monolithic baseline: for each folder of `data`, the spec and seed of the expert phase
    # whose consumed data (its batches' rows, its drawn prompts) this phase replays; None:
    # train on all of `data`.
    replay: list[tuple[LMPhaseSpec | RLVRSpec, int]] | None = None


def phase_seed(specs: Specs, index: int) -> int:
    """The data-order seed of an expert's `index`-th enabled phase."""
    return specs.params.seed * 10 + index


def phases_of(specs: Specs, name: str, data: Path) -> list[Phase]:
    spec = specs.expert(name)
    return [Phase(p, p, getattr(spec.phases, p), [data]) for p in spec.phases.enabled()]


def phase_fingerprint(specs: Specs, phases: list[Phase], tp_size: int) -> str:
    """What the result of the last of `phases` depends on: the architecture, the seed, the
    inputs, the tensor-parallel size and the specs of this phase and the ones before it (not
    the expert's version, its eval spec or its later phases)."""
    upto = [
        [
            p.label,
            p.spec.model_dump(mode="json"),
            *([[r.model_dump(mode="json"), seed] for r, seed in p.replay] if p.replay else []),
        ]
        for p in phases
    ]
    data = sorted({d for p in phases for d in p.data})
    return _training.fingerprint(
        {"model": specs.model.model_dump(mode="json"), "seed": specs.params.seed, "tp_size": tp_size, "phases": upto},
        [*data, *model_inputs(), *rewards(phases)],
    )


def rewards(phases: list[Phase]) -> list[Path]:
    """The user verifiers the RLVR phases among `phases` reward with (those of their prompts' domains):
    editing one re-runs RLVR, not the phases before it."""
    from bar.stages import read_jsonl

    domains = {r["domain"] for p in phases if p.phase == "rlvr" for d in p.data for r in read_jsonl(d / "rl.jsonl")}
    return [f for f in _training.verifier_files() if f.parent.name in domains]


def phase_items(tok, data: Path, phase: str) -> list:
    from bar import tokenizer

    if phase == "midtrain":
        from bar.stages import read_jsonl

        return [tokenizer.document_ids(tok, r["text"]) for r in read_jsonl(data / "midtrain.jsonl")]
    examples = _training.load_examples(data / f"{'rl' if phase == 'rlvr' else phase}.jsonl")
    if phase == "sft":
        return [tokenizer.chat_ids(tok, e.prompt, e.response) for e in examples]
    return examples


def replayed(tok, ph: Phase, seq_length: int) -> list:
    """What the expert phases `ph` replays consumed, all of it: for an LM phase the packed rows
    of their batches, for RLVR the prompts they drew (`ph.replay` gives their specs and seeds)."""
    from bar.train import rlvr
    from bar.train.batches import Batches

    out = []
    for data, (spec, seed) in zip(ph.data, ph.replay):
        items = phase_items(tok, data, ph.phase)
        if ph.phase == "rlvr":
            out += rlvr.draws(items, spec, seed)
        else:
            batches = Batches(
                items, batch_size=spec.batch_size, seq_length=seq_length, pad_id=tok.pad_token_id, seed=seed
            )
            out += [row for step in range(spec.steps) for row in batches.rows(step)]
    return out


def adapt(
    model, phases: list[Phase], root: Path, run_fp: str, specs: Specs, tok, tp_size: int, desc: str, moe: bool = True
) -> tuple[dict[str, list], list[str]]:
    """Train `model` through `phases` in order, each from its finished checkpoint if there is
    one (`<root>/<label>/final`). Returns the per-phase logs and the phases taken from a run
    other than `run_fp` (another version's). In an MoE only each phase's `trainable` groups
    train; in a dense model (`moe=False`, the baselines) every weight does."""
    from bar.model import build
    from bar.model.moe import set_trainable
    from bar.train import rlvr
    from bar.train import train as train_loop
    from bar.train.batches import Batches, Replay
    from bar.train.checkpoint import Resumable, full_state, load_state

    logs, reused = {}, []
    for i, ph in enumerate(phases):
        ckpt = Resumable(root / ph.label, phase_fingerprint(specs, phases[: i + 1], tp_size))
        done = ckpt.finished()
        if done:
            ckpt.load_finished(model)
            logs[ph.label] = done["log"]
            if done.get("run") != run_fp:
                reused.append(ph.label)
            continue
        if moe:
            set_trainable(model, ph.spec.trainable)
        else:
            model.requires_grad_(True)
        seed = phase_seed(specs, i)
        if ph.replay:
            items = replayed(tok, ph, specs.model.seq_length)
        else:
            items = [item for data in ph.data for item in phase_items(tok, data, ph.phase)]
        if ph.phase == "rlvr":
            reference = None
            if ph.spec.kl_coef > 0:  # the policy as RLVR starts (a copy: Megatron modules hold process groups)
                reference = build(specs.model, tp_size, num_experts=2 if moe else None).eval()
                load_state(reference, full_state(model))
                reference.requires_grad_(False)
            logs[ph.label] = rlvr.train(model, reference, items, tok, ph.spec, seed, ckpt, f"{desc} {ph.label}")
        else:
            batches = (
                Replay(items, batch_size=ph.spec.batch_size, seed=seed)
                if ph.replay
                else Batches(
                    items,
                    batch_size=ph.spec.batch_size,
                    seq_length=specs.model.seq_length,
                    pad_id=tok.pad_token_id,
                    seed=seed,
                )
            )
            logs[ph.label] = train_loop(model, batches, ph.spec, ckpt, f"{desc} {ph.label}", ph.spec.lr_scale)
        ckpt.finish(model, {"log": logs[ph.label], "run": run_fp})
    return logs, reused


def branch(specs: Specs, tp_size: int, anchor: dict):
    """The 2-slot MoE an expert starts as: slot 0 the anchor's FFN, slot 1 the pre-trained
    base's, every other weight the anchor's."""
    from safetensors.torch import load_file

    from bar.model import build
    from bar.model.moe import upcycle
    from bar.train.checkpoint import load_state

    model = build(specs.model, tp_size, num_experts=2)
    base = load_file(output("pretrain_base", "model.safetensors"))
    load_state(model, upcycle(anchor, base, specs.model.num_layers))
    return model


def check_anchor_ffn(model, anchor: dict, desc: str) -> None:
    """The anchor FFN (slot 0) must come out of training bit for bit as it went in."""
    import torch

    from bar.model.moe import anchor_ffn
    from bar.train.checkpoint import full_state

    changed = [k for k, v in anchor_ffn(full_state(model)).items() if not torch.equal(v, anchor[k])]
    if changed:
        raise RuntimeError(f"{desc}: the anchor FFN changed in {changed[:3]}: it must stay frozen")


def worker(specs: Specs, name: str) -> None:
    from safetensors.torch import load_file

    from bar import parallel, tokenizer
    from bar.train.checkpoint import Resumable

    spec, arch, data = specs.expert(name), specs.model, output("mix_data", name)
    # The run: its phases' weights depend on less (`phase_fingerprint`); a run that only has a
    # domain more to score reuses them, and its cost counts no training.
    fp = _training.fingerprint(resolved(specs, name), [data, *model_inputs(), *_training.eval_files()])
    parallel.init(spec.tp_size, specs.params.seed)
    root = CHECKPOINTS / STAGE / name
    expert = Resumable(root, fp)
    if expert.finished():
        parallel.shutdown()
        return
    tok = tokenizer.load(output("tokenizer"))
    anchor = load_file(output("train_anchor", "model.safetensors"))
    model = branch(specs, spec.tp_size, anchor)
    logs, reused = adapt(model, phases_of(specs, name, data), root, fp, specs, tok, spec.tp_size, f"{STAGE}@{name}")
    check_anchor_ffn(model, anchor, f"{STAGE}@{name}")
    scores = _training.score_all(model, tok, sorted(specs.data.domains), specs.eval)
    config = {
        "kind": "moe",
        "arch": arch.model_dump(),
        "vocab": len(tok),
        "num_experts": 2,
        "experts": ["anchor", name],
        "expert": name,
        "version": spec.version,
        "domain": spec.domain,
        # What merging checks: experts must share their anchor and tokenizer.
        "anchor_sha256": _training.file_digest(output("train_anchor", "model.safetensors")),
        "tokenizer_sha256": _training.file_digest(output("tokenizer")),
    }
    expert.finish(
        model, {"logs": logs, "reused": reused, "eval": scores, "config": config, "anchor_ffn_unchanged": True}
    )
    parallel.shutdown()


def main(name: str) -> None:
    from bar import tracking

    specs = Specs()
    spec = specs.expert(name)
    res = resolved(specs, name)
    _training.run_parent(
        STAGE,
        item=name,
        tp_size=spec.tp_size,
        resolved=res,
        tags={
            "expert": name,
            "expert_version": str(spec.version),
            "domain": spec.domain,
            "spec_hash": spec_hash(res),
            "data_hash": tracking.dvc_md5(f"outputs/mix_data/{name}"),
            "anchor_hash": tracking.dvc_md5("outputs/train_anchor"),
            "base_hash": tracking.dvc_md5("outputs/pretrain_base"),
        },
        phases=spec.phases.enabled(),
        trainable={p: getattr(spec.phases, p).trainable for p in spec.phases.enabled()},
        extra_metrics=lambda meta: {"anchor_ffn_unchanged": float(meta["anchor_ffn_unchanged"])},
        register=lambda run, out: register(run, out, name, spec.version, spec_hash(res)),
    )


def register(run, out, name: str, version: int, spec_digest: str) -> None:
    """`bar-expert-<name>`: one registered version per trained expert version."""
    from bar.train.checkpoint import sha256

    run.register_model(
        f"bar-expert-{name}",
        out / "hf",
        {
            "expert": name,
            "expert_version": version,
            "spec_hash": spec_digest,
            "sha256": sha256(out / "model.safetensors"),
        },
    )


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--worker"]
    if len(args) != 1:
        raise SystemExit(f"usage: python -m bar.stages.{STAGE} <expert> (one of specs/experts/*.yaml)")
    entry(lambda: worker(Specs(), args[0]) if "--worker" in sys.argv else main(args[0]))
