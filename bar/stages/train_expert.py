"""Stage train_expert@<expert>: branch from the anchor, adapt through the expert's phases.

The enabled phases of `specs/experts/<expert>.yaml` in order (midtrain -> sft -> rlvr), each
training only its `trainable` groups, each kept in `checkpoints/train_expert/<expert>/<phase>/final`
(`bar.train.phases`: a new version that changes only later phases starts from the last phase it
shares with the previous one). The run's cost counts only the phases it trained. The anchor FFN
is verified bit for bit before the expert is published (unless a phase trains it, `anchor_ffn`:
an ablation); the expert is scored on every domain's eval split.
"""

from __future__ import annotations

import sys

from bar.files import CHECKPOINTS, output
from bar.specs import Specs, spec_hash
from bar.stages import entry

STAGE = "train_expert"


def resolved(specs: Specs, name: str) -> dict:
    return {
        "expert": specs.expert(name).model_dump(mode="json"),
        "model": specs.model.model_dump(mode="json"),
        "eval": specs.eval.model_dump(mode="json"),
        "seed": specs.params.seed,
    }


def worker(specs: Specs, name: str) -> None:
    from safetensors.torch import load_file

    from bar import parallel, tokenizer
    from bar.scoring import eval_files, score_all
    from bar.train.checkpoint import Resumable, file_digest, fingerprint
    from bar.train.phases import adapt, branch, check_anchor_ffn, model_inputs, phases_of

    spec, arch, data = specs.expert(name), specs.model, output("mix_data", name)
    # The run: its phases' weights depend on less (`phase_fingerprint`); a run that only has a
    # domain more to score reuses them, and its cost counts no training.
    fp = fingerprint(resolved(specs, name), [data, *model_inputs(), *eval_files()])
    parallel.init(spec.tp_size, specs.params.seed, spec.dp_size)
    root = CHECKPOINTS / STAGE / name
    expert = Resumable(root, fp)
    if expert.finished():
        parallel.shutdown()
        return
    tok = tokenizer.load(output("tokenizer"))
    anchor = load_file(output("train_anchor", "model.safetensors"))
    model = branch(specs, spec.tp_size, anchor)
    planned = phases_of(specs, name, data)
    logs, reused = adapt(model, planned, root, fp, specs, tok, spec.tp_size, f"{STAGE}@{name}")
    frozen = check_anchor_ffn(model, anchor, f"{STAGE}@{name}", planned)
    scores = score_all(model, tok, sorted(specs.data.domains), specs.eval)
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
        "anchor_sha256": file_digest(output("train_anchor", "model.safetensors")),
        "tokenizer_sha256": file_digest(output("tokenizer")),
        "anchor_ffn_trained": not frozen,  # the merge then combines slot 0 as a shared tensor
    }
    expert.finish(
        model, {"logs": logs, "reused": reused, "eval": scores, "config": config, "anchor_ffn_unchanged": frozen}
    )
    parallel.shutdown()


def main(name: str) -> None:
    from bar import tracking
    from bar.runner import run_parent

    specs = Specs()
    spec = specs.expert(name)
    res = resolved(specs, name)
    run_parent(
        STAGE,
        __spec__.name,
        worker=lambda: worker(specs, name),
        item=name,
        nproc=spec.tp_size * spec.dp_size,
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
