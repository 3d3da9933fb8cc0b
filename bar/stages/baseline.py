"""Stage baseline@<name> (opt-in: `dvc repro baselines/dvc.yaml`): what BAR is compared with.

`name` is one of params.yaml `baselines`; specs/baselines.yaml says what each trains
(`bar.train.baselines`: monolithic, sequential, or an ablation of an expert spec). An ablation
is drawn its own mixture as the expert of its domain draws one (the same items when the
mixture is the same). The sequential baseline is scored on every domain after each expert's
data, which shows what it forgets. Every weight of a dense baseline trains in every phase.
Each is scored by the code that scores the experts and published like them:
outputs/baseline/<name>/, metrics/baseline/<name>.json.
"""

from __future__ import annotations

import sys

from bar.files import CHECKPOINTS, output
from bar.specs import Specs, spec_hash, split_of
from bar.stages import entry

STAGE = "baseline"


def resolved(specs: Specs, name: str) -> dict:
    from bar.train.baselines import PER_STEP, phases

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
            for p in phases(specs, name)
        ],
    }


def worker(specs: Specs, name: str) -> None:
    from safetensors.torch import load_file

    from bar import parallel, tokenizer
    from bar.model import build
    from bar.scoring import eval_files, score_all
    from bar.train.baselines import phases as baseline_phases
    from bar.train.checkpoint import Resumable, fingerprint, load_state
    from bar.train.phases import adapt, branch, check_anchor_ffn, model_inputs

    kind, arch, phases = specs.baseline(name), specs.model, baseline_phases(specs, name)
    tp = specs.baselines.tp_size
    data = sorted({d for p in phases for d in p.data})
    fp = fingerprint(resolved(specs, name), [*data, *model_inputs(), *eval_files()])
    parallel.init(tp, specs.params.seed, specs.baselines.dp_size)
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
        model = branch(specs, tp, anchor)
        logs, reused = adapt(model, phases, root, fp, specs, tok, tp, desc)
        frozen = check_anchor_ffn(model, anchor, desc, phases)
        config = {
            "kind": "moe",
            "arch": arch.model_dump(),
            "vocab": len(tok),
            "num_experts": 2,
            "experts": ["anchor", name],
            "expert": name,
            "domain": specs.expert(name).domain,
            "anchor_ffn_trained": not frozen,
        }
        scores = score_all(model, tok, domains, specs.eval)
    else:
        model = build(arch, tp)
        load_state(model, anchor)
        config = {"kind": "dense", "arch": arch.model_dump(), "vocab": len(tok)}
        if kind == "sequential":  # scored after each domain: what the later ones made it forget
            extra["after"] = {}
            for expert in specs.baselines.sequential_order:
                upto = max(i for i, p in enumerate(phases) if p.label.endswith(f".{expert}")) + 1
                logs, reused = adapt(model, phases[:upto], root, fp, specs, tok, tp, desc, moe=False)
                extra["after"][expert] = score_all(model, tok, domains, specs.eval)
            scores = extra["after"][expert]
        else:
            logs, reused = adapt(model, phases, root, fp, specs, tok, tp, desc, moe=False)
            scores = score_all(model, tok, domains, specs.eval)
    run.finish(model, {"logs": logs, "reused": reused, "eval": scores, "config": config, **extra})
    parallel.shutdown()


def main(name: str) -> None:
    from bar import tracking
    from bar.data.mixture import mix
    from bar.files import write_jsonl
    from bar.runner import run_parent
    from bar.train.baselines import ablation_data, phases

    specs = Specs()
    kind = specs.baseline(name)
    if kind == "ablation":  # its own mixture, drawn with its domain's expert's seed stream
        spec = specs.expert(name)
        needed = [split_of(p) for p in spec.phases.enabled()]
        splits = mix(spec.domain, spec.mixture, needed, specs.params.seed, str(specs.path(f"experts/{name}")))
        ablation_data(name).mkdir(parents=True, exist_ok=True)
        for split, rows in splits.items():
            write_jsonl(ablation_data(name) / f"{split}.jsonl", rows)
    res = resolved(specs, name)
    planned = phases(specs, name)

    def after(meta: dict) -> dict[str, float]:
        return {
            f"after_{e}/eval/{d}": s["pass_rate"]
            for e, scores in meta.get("after", {}).items()
            for d, s in scores.items()
        }

    run_parent(
        STAGE,
        __spec__.name,
        worker=lambda: worker(specs, name),
        item=name,
        nproc=specs.baselines.tp_size * specs.baselines.dp_size,
        resolved=res,
        tags={
            "baseline": name,
            "kind": kind,
            "spec_hash": spec_hash(res),
            "anchor_hash": tracking.dvc_md5("outputs/train_anchor"),
            "base_hash": tracking.dvc_md5("outputs/pretrain_base"),
        },
        phases=[p.label for p in planned],
        # an ablation is an expert (its phases train their groups); the dense baselines train every weight
        trainable={p.label: p.spec.trainable for p in planned} if kind == "ablation" else None,
        extra_metrics=after,
    )


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--worker"]
    if len(args) != 1:
        raise SystemExit(f"usage: python -m bar.stages.{STAGE} <baseline> (one of params.yaml baselines)")
    entry(lambda: worker(Specs(), args[0]) if "--worker" in sys.argv else main(args[0]))
