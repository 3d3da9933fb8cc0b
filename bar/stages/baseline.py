"""Stage baseline@<name> (opt-in: `dvc repro baselines/dvc.yaml`): what BAR is compared with.

`name` is one of params.yaml `baselines` (specs/baselines.yaml says what each trains):
- `monolithic`: the anchor, dense, retrained through the same phases on exactly the data the
  experts consumed: each phase replays, shuffled together and once each, the packed rows of
  every expert's batches for that phase (for RLVR, the prompts each expert drew), so every
  domain gets the exposure its expert got. The phase takes the hyper-parameters of the first
  expert (params.yaml order) that has it, with as many steps as that data fills at its batch
  size (prompts per step); RLVR rewards each prompt with its own domain's verifier.
- `sequential`: the anchor, dense, trained on one expert's data after another
  (`sequential_order`), each through that expert's phases; scored on every domain after each,
  which shows what it forgets.
- an ablation: an expert spec that params.yaml `experts` does not list (e.g. math_ffn_only),
  branched and trained exactly as `train_expert` trains an expert, on its own mixture drawn
  as the expert of its domain draws it (the same items when the mixture is the same).

Every weight of a dense baseline trains in every phase. Each is scored by the code that
scores the experts and published like them: outputs/baseline/<name>/, metrics/baseline/<name>.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bar.specs import PHASES, Specs, spec_hash
from bar.stages import CHECKPOINTS, _training, entry, output
from bar.stages.train_expert import Phase, adapt, branch, check_anchor_ffn, model_inputs, phase_seed, phases_of

STAGE = "baseline"
PER_STEP = {"midtrain": "batch_size", "sft": "batch_size", "rlvr": "prompts_per_step"}


def ablation_data(name: str) -> Path:
    return CHECKPOINTS / STAGE / name / "data"


def dense(spec):
    """An expert phase's spec as a dense model takes it: without the router's `lr_scale` (a
    dense model has no router), so that a router setting leaves the dense baselines as they are."""
    return spec.model_copy(update={"lr_scale": {g: v for g, v in spec.lr_scale.items() if g != "router"}})


def plan(specs: Specs, name: str) -> list[Phase]:
    kind = specs.baseline(name)
    if kind == "ablation":
        return phases_of(specs, name, ablation_data(name))
    if kind == "sequential":
        return [
            Phase(f"{p}.{e}", p, dense(getattr(specs.expert(e).phases, p)), [output("mix_data", e)])
            for e in specs.baselines.sequential_order
            for p in specs.expert(e).phases.enabled()
        ]
    phases = []
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
        phases.append(
            Phase(
                phase, phase, first.model_copy(update={"steps": steps}), [output("mix_data", e) for e in have], replay
            )
        )
    return phases


def resolved(specs: Specs, name: str) -> dict:
    return {
        "baseline": name,
        "kind": specs.baseline(name),
        "model": specs.model.model_dump(mode="json"),
        "eval": specs.eval.model_dump(mode="json"),
        "seed": specs.params.seed,
        "phases": [
            {
                "label": p.label,
                "data": [str(d) for d in p.data],
                **p.spec.model_dump(mode="json"),
                **(
                    {
                        "replay": [
                            {"steps": r.steps, "per_step": getattr(r, PER_STEP[p.phase]), "seed": seed}
                            for r, seed in p.replay
                        ]
                    }
                    if p.replay
                    else {}
                ),
            }
            for p in plan(specs, name)
        ],
    }


def worker(specs: Specs, name: str) -> None:
    from safetensors.torch import load_file

    from bar import parallel, tokenizer
    from bar.model import build
    from bar.train.checkpoint import Resumable, load_state

    kind, arch, phases = specs.baseline(name), specs.model, plan(specs, name)
    data = sorted({d for p in phases for d in p.data})
    fp = _training.fingerprint(resolved(specs, name), [*data, *model_inputs(), *_training.eval_files()])
    parallel.init(1, specs.params.seed)
    root = CHECKPOINTS / STAGE / name
    run = Resumable(root, fp)
    if run.finished():
        parallel.shutdown()
        return
    tok = tokenizer.load(output("tokenizer"))
    domains = sorted(specs.data.domains)
    anchor = load_file(output("train_anchor", "model.safetensors"))
    desc = f"{STAGE}@{name}"
    extra = {}
    if kind == "ablation":
        model = branch(specs, 1, anchor)
        logs, reused = adapt(model, phases, root, fp, specs, tok, 1, desc)
        check_anchor_ffn(model, anchor, desc)
        config = {
            "kind": "moe",
            "arch": arch.model_dump(),
            "vocab": len(tok),
            "num_experts": 2,
            "experts": ["anchor", name],
            "expert": name,
            "domain": specs.expert(name).domain,
        }
        scores = _training.score_all(model, tok, domains, specs.eval)
    else:
        model = build(arch, 1)
        load_state(model, anchor)
        config = {"kind": "dense", "arch": arch.model_dump(), "vocab": len(tok)}
        if kind == "sequential":  # scored after each domain: what the later ones made it forget
            extra["after"] = {}
            for expert in specs.baselines.sequential_order:
                upto = max(i for i, p in enumerate(phases) if p.label.endswith(f".{expert}")) + 1
                logs, reused = adapt(model, phases[:upto], root, fp, specs, tok, 1, desc, moe=False)
                extra["after"][expert] = _training.score_all(model, tok, domains, specs.eval)
            scores = extra["after"][expert]
        else:
            logs, reused = adapt(model, phases, root, fp, specs, tok, 1, desc, moe=False)
            scores = _training.score_all(model, tok, domains, specs.eval)
    run.finish(model, {"logs": logs, "reused": reused, "eval": scores, "config": config, **extra})
    parallel.shutdown()


def main(name: str) -> None:
    from bar import tracking
    from bar.stages import write_jsonl
    from bar.stages.mix_data import mix

    specs = Specs()
    kind = specs.baseline(name)
    if kind == "ablation":  # its own mixture, drawn with its domain's expert's seed stream
        spec = specs.expert(name)
        needed = ["rl" if p == "rlvr" else p for p in spec.phases.enabled()]
        splits = mix(spec.domain, spec.mixture, needed, specs.params.seed, str(specs.path(f"experts/{name}")))
        ablation_data(name).mkdir(parents=True, exist_ok=True)
        for split, rows in splits.items():
            write_jsonl(ablation_data(name) / f"{split}.jsonl", rows)
    res = resolved(specs, name)
    phases = plan(specs, name)

    def after(meta: dict) -> dict[str, float]:
        return {
            f"after_{e}/eval/{d}": s["pass_rate"]
            for e, scores in meta.get("after", {}).items()
            for d, s in scores.items()
        }

    _training.run_parent(
        STAGE,
        item=name,
        tp_size=1,
        resolved=res,
        tags={
            "baseline": name,
            "kind": kind,
            "spec_hash": spec_hash(res),
            "anchor_hash": tracking.dvc_md5("outputs/train_anchor"),
            "base_hash": tracking.dvc_md5("outputs/pretrain_base"),
        },
        phases=[p.label for p in phases],
        # an ablation is an expert (its phases train their groups); the dense baselines train every weight
        trainable={p.label: p.spec.trainable for p in phases} if kind == "ablation" else None,
        extra_metrics=after,
    )


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--worker"]
    if len(args) != 1:
        raise SystemExit(f"usage: python -m bar.stages.{STAGE} <baseline> (one of params.yaml baselines)")
    entry(lambda: worker(Specs(), args[0]) if "--worker" in sys.argv else main(args[0]))
