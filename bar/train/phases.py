"""An expert's training phases: branch from the anchor, adapt through midtrain -> sft -> rlvr.

Branch: a 2-slot MoE per layer, slot 0 the anchor's FFN (never trained), slot 1 the
pre-trained base's FFN, everything else from the anchor. Adapt: the phases in order, each
training only its `trainable` groups (a dense baseline: every weight). Each finished phase is
kept in `<root>/<phase>/final`, so a re-run resumes inside the phase it was killed in, and a
new version that changes only later phases starts from the last phase it shares with the
previous version: training is deterministic, so the shared phases would come out the same bit
for bit (`phase_fingerprint` says what a phase's result depends on).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bar.data.example import read_examples
from bar.data.verify import verifier_files
from bar.files import output, read_jsonl
from bar.specs import LMPhaseSpec, RLVRSpec, Specs, split_of
from bar.train.checkpoint import fingerprint


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
    """The enabled phases of expert `name`, in order, on its mixture in `data`."""
    spec = specs.expert(name)
    return [Phase(p, p, getattr(spec.phases, p), [data]) for p in spec.phases.enabled()]


def phase_fingerprint(specs: Specs, phases: list[Phase]) -> str:
    """What the result of the last of `phases` depends on: the architecture, the seed, the
    inputs and the specs of this phase and the ones before it (not the expert's version, its eval
    spec, its later phases or how it is laid out over processes: `checkpoint.LAYOUT`)."""
    upto = [
        [
            p.label,
            p.spec.model_dump(mode="json"),
            *([[r.model_dump(mode="json"), seed] for r, seed in p.replay] if p.replay else []),
        ]
        for p in phases
    ]
    data = sorted({d / phase_file(p.phase) for p in phases for d in p.data})  # only the files each phase reads
    return fingerprint(
        {"model": specs.model.model_dump(mode="json"), "seed": specs.params.seed, "phases": upto},
        [*data, *model_inputs(), *rewards(phases)],
    )


def rewards(phases: list[Phase]) -> list[Path]:
    """The user verifiers the RLVR phases among `phases` reward with (those of their prompts' domains):
    editing one re-runs RLVR, not the phases before it."""
    domains = {
        r["domain"] for p in phases if p.phase == "rlvr" for d in p.data for r in read_jsonl(d / phase_file("rlvr"))
    }
    return [f for f in verifier_files() if f.parent.name in domains]


def phase_file(phase: str) -> str:
    """The file of a mixture folder a phase trains on."""
    return f"{split_of(phase)}.jsonl"


def phase_items(tok, data: Path, phase: str, seq_length: int) -> list:
    from bar import tokenizer

    if phase == "midtrain":
        return [tokenizer.document_ids(tok, r["text"]) for r in read_jsonl(data / phase_file(phase))]
    examples = read_examples(data / phase_file(phase))
    if phase == "sft":
        return [ids for _, ids in tokenizer.example_items(tok, examples, seq_length)]
    return examples


def replayed(tok, ph: Phase, seq_length: int) -> list:
    """What the expert phases `ph` replays consumed, all of it: for an LM phase the packed rows
    of their batches, for RLVR the prompts they drew (`ph.replay` gives their specs and seeds)."""
    from bar.train import rlvr
    from bar.train.batches import Batches

    out = []
    for data, (spec, seed) in zip(ph.data, ph.replay):
        items = phase_items(tok, data, ph.phase, seq_length)
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
        ckpt = Resumable(root / ph.label, phase_fingerprint(specs, phases[: i + 1]))
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
            items = [item for data in ph.data for item in phase_items(tok, data, ph.phase, specs.model.seq_length)]
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
            logs[ph.label] = train_loop(
                model, batches, ph.spec, ckpt, f"{desc} {ph.label}", ph.spec.lr_scale, ph.spec.micro_batch_size
            )
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


def check_anchor_ffn(model, anchor: dict, desc: str, phases: list) -> bool:
    """The anchor FFN (slot 0) must come out of training bit for bit as it went in, unless a
    phase trains it (`anchor_ffn`). Returns whether it stayed frozen."""
    import torch

    if any("anchor_ffn" in p.spec.trainable for p in phases):
        return False
    from bar.model.moe import anchor_ffn
    from bar.train.checkpoint import full_state

    changed = [k for k, v in anchor_ffn(full_state(model)).items() if not torch.equal(v, anchor[k])]
    if changed:
        raise RuntimeError(f"{desc}: the anchor FFN changed in {changed[:3]}: it must stay frozen")
    return True
