"""How a training stage runs: a parent that launches workers, then publishes what they made.

The stage's script (the parent, run by DVC with `python -m`) validates the specs, opens the
MLflow run and starts `torchrun` with one worker per rank, each running the same module with
`--worker` (a stage of one process runs its worker in the parent). The workers train (resuming
from `checkpoints/<stage>[/<item>]/` if a matching checkpoint is there), score the result on
held-out data, and rank 0 writes `final` there. The parent then publishes `outputs/<stage>[/<item>]/` (weights, config,
training logs, scores, Hugging Face export) in one rename, writes
`metrics/<stage>[/<item>].json` and records everything in MLflow.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from bar.files import CHECKPOINTS, atomic_dir, output, read_jsonl, write_json, write_metrics
from bar.specs import EvalSpec, ModelSpec

# --- worker side -------------------------------------------------------------------------

DENSE_PHASE = "train"  # a single-phase stage's training: checkpoints/<stage>/train/


def kept_training(stage: str, model, train_fingerprint: str, fingerprint: str, train) -> tuple[list, list[str]]:
    """(log, reused phases) of `model`'s training: `train(ckpt) -> log` in checkpoints/<stage>/train/
    with `train_fingerprint` (what the weights depend on), kept after publishing; or the weights
    already there, which count as reused when another run (not `fingerprint`) trained them."""
    from bar.train.checkpoint import Resumable

    trained = Resumable(CHECKPOINTS / stage / DENSE_PHASE, train_fingerprint)
    if done := trained.finished():
        trained.load_finished(model)
        return done["log"], [DENSE_PHASE] if done.get("run") != fingerprint else []
    log = train(trained)
    trained.finish(model, {"log": log, "run": fingerprint})
    return log, []


def run_dense_worker(
    stage: str,
    *,
    arch: ModelSpec,
    train,
    seed: int,
    items: list,
    init: Path | None,
    eval_domains: list[str],
    eval_spec: EvalSpec,
    fingerprint: str,
    train_fingerprint: str,
    added_tokens: list[int] = (),
) -> None:
    """Train a dense model on `items` from `init` (or from scratch), score it, write `final`.
    `added_tokens` get the mean embedding and LM-head row after training (`bar.model.init_added_tokens`).

    The training is `checkpoints/<stage>/train/` with `train_fingerprint` (what the weights depend
    on: not the held-out data), kept after publishing as an expert's phases are: a re-run for
    another reason only (a domain added, so one more to score) loads those weights and scores them."""
    from safetensors.torch import load_file

    from bar import parallel, tokenizer
    from bar.model import build
    from bar.scoring import score_all
    from bar.train import train as train_loop
    from bar.train.batches import Batches
    from bar.train.checkpoint import Resumable, load_state

    parallel.init(train.tp_size, seed, train.dp_size)
    result = Resumable(CHECKPOINTS / stage, fingerprint)
    if result.finished():
        parallel.shutdown()
        return
    tok = tokenizer.load(output("tokenizer"))
    model = build(arch, train.tp_size)

    def fit(ckpt) -> list:
        if init is not None:
            load_state(model, load_file(init / "model.safetensors"))
        batches = Batches(
            items, batch_size=train.batch_size, seq_length=arch.seq_length, pad_id=tok.pad_token_id, seed=seed
        )
        log = train_loop(model, batches, train, ckpt, desc=stage, micro_batch_size=train.micro_batch_size)
        if added_tokens:
            from bar.model import init_added_tokens
            from bar.train.checkpoint import full_state

            load_state(model, init_added_tokens(full_state(model), added_tokens, len(tok)))
        return log

    log, reused = kept_training(stage, model, train_fingerprint, fingerprint, fit)
    scores = score_all(model, tok, eval_domains, eval_spec)
    config = {"kind": "dense", "arch": arch.model_dump(), "vocab": len(tok)}
    result.finish(model, {"logs": {DENSE_PHASE: log}, "reused": reused, "eval": scores, "config": config})
    parallel.shutdown()


def run_import_worker(
    stage: str,
    *,
    arch: ModelSpec,
    train,
    seed: int,
    folder: Path,
    eval_domains: list[str],
    eval_spec: EvalSpec,
    fingerprint: str,
) -> None:
    """A user's model (a transformers folder: the base, or an anchor) converted to Megatron-Core
    tensor by tensor (`bar.model.hf.hf_tensors`: about one layer held besides the model), the special tokens bar added to its tokenizer at the mean row
    (`bar.model.init_added_tokens`), scored and written as `final`: a stage that trains nothing."""
    from bar import parallel, tokenizer
    from bar.model import build, with_added_tokens
    from bar.model.hf import hf_tensors, read_hf
    from bar.scoring import score_all
    from bar.train.checkpoint import Resumable, load_state

    parallel.init(train.tp_size, seed, train.dp_size)
    result = Resumable(CHECKPOINTS / stage, fingerprint)
    if not result.finished():
        tok = tokenizer.load(output("tokenizer"))
        added = tok.convert_tokens_to_ids(tokenizer.missing_specials(tokenizer.saved_tokens(folder)[0]))
        model = build(arch, train.tp_size, initialize=False)  # every weight is the user's
        load_state(model, with_added_tokens(hf_tensors(read_hf(folder), arch), added, len(tok)))
        scores = score_all(model, tok, eval_domains, eval_spec)
        config = {"kind": "dense", "arch": arch.model_dump(), "vocab": len(tok)}
        result.finish(model, {"logs": {}, "eval": scores, "config": config})
    parallel.shutdown()


# --- parent side -------------------------------------------------------------------------


def log_partial_histories(run, root: Path, phases: list[str] | None) -> None:
    """Per-step logs of the run's training phases (`<root>/<phase>/log.jsonl`; a single-phase
    stage: `<root>/log.jsonl`), finished or not, into MLflow. Only these: `root` may also hold
    phases of another configuration that a crash left behind."""
    logs = [root / p / "log.jsonl" for p in phases] if phases else [root / "log.jsonl"]
    for log in (path for path in logs if path.exists()):
        phase = log.parent.name if log.parent != root else "train"
        run.log_history(read_jsonl(log), prefix=f"{phase}/")


def summary(logs: dict[str, list[dict]]) -> dict[str, float]:
    metrics = {}
    for phase, records in logs.items():
        if not records:
            continue
        tail = records[-max(1, len(records) // 10) :]
        metrics[f"{phase}/final_loss"] = sum(r["loss"] for r in tail) / len(tail)
        metrics[f"{phase}/tokens_total"] = sum(r["tokens"] for r in records)  # per step: {phase}/tokens
        metrics[f"{phase}/steps"] = len(records)
        if "reward_mean" in records[0]:
            head = records[: max(1, len(records) // 10)]
            metrics[f"{phase}/reward_first10"] = sum(r["reward_mean"] for r in head) / len(head)
            metrics[f"{phase}/reward_last10"] = sum(r["reward_mean"] for r in tail) / len(tail)
    return metrics


def run_parent(
    stage: str,
    module: str,
    *,
    worker: Callable[[], None],
    item: str | None = None,
    nproc: int,
    resolved: dict,
    tags: dict[str, str],
    phases: list[str] | None = None,
    trainable: dict | None = None,
    extra_metrics=None,
    register=None,
) -> None:
    """Launch the workers of `stage` (for `item`): `worker()` in this process when the stage is
    one process (`bar.launch.run_workers`), else torchrun runs `module` (the stage's own) with
    `--worker`; then publish, record and clean up.

    `phases` names the training phases of a multi-phase stage (their checkpoint folders);
    `trainable` ({phase: groups}) what trains in each (a phase not listed: every weight), for
    the FLOP count; `register(run, out)`, if given, adds the published model to the MLflow
    model registry."""
    from safetensors.torch import load_file

    from bar import figures, launch, tracking
    from bar.cost import training_flops
    from bar.model.hf import export
    from bar.tokenizer import load as load_tokenizer
    from bar.train.checkpoint import read_meta

    parts = (stage, item) if item else (stage,)
    name = f"{stage}@{item}" if item else stage
    root = CHECKPOINTS.joinpath(*parts)
    with tracking.stage_run(name, spec=resolved, tags=tags, nproc=launch.Nodes.from_env().per_node(nproc)) as run:
        try:
            launch.run_workers(module, nproc, [*parts[1:], "--worker"], worker)
        finally:
            log_partial_histories(run, root, phases)
        meta = read_meta(root / "final")
        if meta is None:
            raise SystemExit(f"{name}: workers exited without a complete {root / 'final'}")
        config = meta["config"]
        with atomic_dir(output(*parts)) as out:
            shutil.copy(root / "final" / "model.safetensors", out / "model.safetensors")
            write_json(out / "config.json", {**config, "spec": resolved})
            write_json(
                out / "train_log.json",
                [{"phase": phase, **r} for phase, records in meta["logs"].items() for r in records],
            )
            write_json(out / "eval.json", meta["eval"])
            if any(meta["logs"].values()):  # an imported base trained nothing
                figures.training_curves(meta["logs"], out / "training.png", name)
            export(
                load_file(out / "model.safetensors"),
                ModelSpec(**config["arch"]),
                load_tokenizer(output("tokenizer")),
                out / "hf",
                config.get("num_experts"),
                config.get("topk"),
                config.get("sequence_topk"),
            )
        metrics = summary(meta["logs"]) | {f"eval/{d}": s["pass_rate"] for d, s in meta["eval"].items()}
        # cost/*: what this run trained; cost/flops_from_scratch also counts the phases it
        # started from (another version's), i.e. what training this model anew would cost;
        # cost/dense_flops: those tokens on the dense model, every weight training (bar.cost).
        tokens = {phase: metrics[f"{phase}/tokens_total"] for phase, records in meta["logs"].items() if records}
        trained = {phase: n for phase, n in tokens.items() if phase not in meta.get("reused", [])}
        arch, num_experts = ModelSpec(**config["arch"]), config.get("num_experts")
        metrics |= {
            "cost/tokens": sum(trained.values()),
            "cost/flops": training_flops(arch, trained, num_experts, trainable),
            "cost/flops_from_scratch": training_flops(arch, tokens, num_experts, trainable),
            "cost/dense_flops": training_flops(arch, tokens),
        }
        if extra_metrics:
            metrics |= extra_metrics(meta)
        write_metrics("/".join(parts), metrics)
        run.log_metrics(metrics)
        run.set_tags({"reused_phases": ",".join(meta.get("reused", [])) or "none"})
        if output(*parts, "training.png").exists():
            run.log_artifact(output(*parts, "training.png"))
        run.log_dict(meta["eval"], "eval.json")
        if register:
            register(run, output(*parts))
        clean(root)


def clean(root: Path) -> None:
    """Remove a published stage's checkpoints, but keep the `final` of each training phase
    (`<root>/<phase>/final`): a later version that changes only later phases starts there."""

    def remove(path: Path) -> None:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()

    for path in root.iterdir():
        if (path / "final" / "checkpoint.json").is_file() and path.name != "final":
            for p in path.iterdir():
                if p.name != "final":
                    remove(p)
        else:
            remove(path)
    if not any(root.iterdir()):
        root.rmdir()
