"""What each baseline BAR is compared with trains through (specs/baselines.yaml):

- `monolithic`: the anchor, dense, retrained through the same phases on exactly the data the
  experts consumed: each phase replays, shuffled together and once each, the packed rows of
  every expert's batches for that phase (for RLVR, the prompts each expert drew), so every
  domain gets the exposure its expert got. The phase takes the hyper-parameters of the first
  expert (params.yaml order) that has it, with as many steps as that data fills at its batch
  size (prompts per step); RLVR rewards each prompt with its own domain's verifier.
- `sequential`: the anchor, dense, trained on one expert's data after another
  (`sequential_order`), each through that expert's phases.
- an ablation: an expert spec that params.yaml `experts` does not list (e.g. math_ffn_only),
  branched and trained exactly as an expert is, on its own mixture.
"""

from __future__ import annotations

from pathlib import Path

from bar.files import CHECKPOINTS, output
from bar.specs import PHASES, Specs
from bar.train.phases import Phase, phase_seed, phases_of

PER_STEP = {"midtrain": "batch_size", "sft": "batch_size", "rlvr": "prompts_per_step"}


def ablation_data(name: str) -> Path:
    """Where an ablation's own mixture is drawn to (it is no expert of params.yaml: no mix_data)."""
    return CHECKPOINTS / "baseline" / name / "data"


def dense(spec):
    """An expert phase's spec as a dense model takes it: without the router's `lr_scale` (a
    dense model has no router), so that a router setting leaves the dense baselines as they are."""
    return spec.model_copy(update={"lr_scale": {g: v for g, v in spec.lr_scale.items() if g != "router"}})


def phases(specs: Specs, name: str) -> list[Phase]:
    """The phases baseline `name` trains through (specs/baselines.yaml says which kind it is)."""
    kind = specs.baseline(name)
    if kind == "ablation":
        return phases_of(specs, name, ablation_data(name))
    if kind == "sequential":
        return [
            Phase(f"{p}.{e}", p, dense(getattr(specs.expert(e).phases, p)), [output("mix_data", e)])
            for e in specs.baselines.sequential_order
            for p in specs.expert(e).phases.enabled()
        ]
    out = []
    for phase in PHASES:
        have = [e for e in specs.params.experts if getattr(specs.expert(e).phases, phase)]
        if not have:
            continue
        of = [specs.expert(e).phases for e in have]
        replay = [(dense(getattr(ph, phase)), phase_seed(specs, ph.enabled().index(phase))) for ph in of]
        first = replay[0][0]
        # Every expert's consumed data once: rows (batch_size a step) or prompts (prompts_per_step).
        per_step = PER_STEP[phase]
        consumed = sum(spec.steps * getattr(spec, per_step) for spec, _ in replay)
        steps = -(-consumed // getattr(first, per_step))
        out.append(
            Phase(
                phase, phase, first.model_copy(update={"steps": steps}), [output("mix_data", e) for e in have], replay
            )
        )
    return out
