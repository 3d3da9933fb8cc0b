"""What the training stages share.

A training stage runs twice over: `python -m bar.stages.<stage>` (the parent) validates the
specs, opens the MLflow run and starts `torchrun` with one worker per tensor-parallel rank,
each running `python -m bar.stages.<stage> --worker`. The workers train (resuming from
`checkpoints/<stage>/` if a matching checkpoint is there), score the result on held-out
data, and rank 0 writes `checkpoints/<stage>/final`. The parent then publishes
`outputs/<stage>/` (weights, config, training log, scores, Hugging Face export) in one
rename, writes `metrics/<stage>.json` and records everything in MLflow.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from bar.specs import ModelSpec, TrainSpec
from bar.stages import CHECKPOINTS, METRICS, atomic_dir, output, read_jsonl, write_json, write_metrics


def file_digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for path in paths:
        for f in sorted(Path(path).rglob("*")) if Path(path).is_dir() else [Path(path)]:
            if f.is_file():
                h.update(f.name.encode())
                h.update(f.read_bytes())
    return h.hexdigest()[:16]


def fingerprint(resolved: dict, inputs: list[Path]) -> str:
    """What a checkpoint belongs to: the resolved spec and the content of every input."""
    return hashlib.sha256((json.dumps(resolved, sort_keys=True) + file_digest(*inputs)).encode()).hexdigest()[:16]


def load_examples(domain: str, split: str) -> list:
    from bar.data import Example

    return [Example.from_json(r) for r in read_jsonl(output("prepare_data", domain, f"{split}.jsonl"))]


# --- worker side -------------------------------------------------------------------------


def run_worker(stage: str, *, arch: ModelSpec, train: TrainSpec, seed: int, items: list,
               init: Path | None, eval_domains: list[str], eval_spec, fingerprint: str) -> None:
    """Train a dense model on `items` from `init` (or from scratch), score it, write `final`."""
    import torch
    from safetensors.torch import load_file

    from bar import eval as evaluation
    from bar import parallel, tokenizer
    from bar.model import build
    from bar.train import train as train_loop
    from bar.train.batches import Batches
    from bar.train.checkpoint import Resumable, full_state, load_state, read_meta, write

    parallel.init(train.tp_size, seed)
    ckpt = Resumable(CHECKPOINTS / stage, fingerprint)
    final = ckpt.root / "final"
    done = parallel.broadcast_object(read_meta(final) if parallel.rank() == 0 else None)
    if done and done.get("fingerprint") == fingerprint:
        parallel.shutdown()
        return
    tok = tokenizer.load(output("tokenizer"))
    model = build(arch, train.tp_size)
    if init is not None:
        load_state(model, load_file(init / "model.safetensors"))
    batches = Batches(items, batch_size=train.batch_size, seq_length=arch.seq_length,
                      pad_id=tok.pad_token_id, seed=seed)
    log = train_loop(model, batches, train, ckpt, desc=stage)
    model.eval()
    scores = {}
    with torch.no_grad():
        for domain in eval_domains:
            examples = load_examples(domain, "eval")[: eval_spec.num_examples]
            scores[domain] = evaluation.score(model, tok, examples, batch_size=eval_spec.batch_size,
                                              max_new_tokens=eval_spec.max_new_tokens)
    state = full_state(model)
    if parallel.rank() == 0:
        config = {"kind": "dense", "stage": stage, "arch": arch.model_dump(), "vocab": len(tok)}
        write(final, {"model": state}, {"fingerprint": fingerprint, "log": log, "eval": scores,
                                        "config": config})
    torch.distributed.barrier()
    parallel.shutdown()


# --- parent side -------------------------------------------------------------------------


def plot_curve(records: list[dict], key: str, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in records], [r[key] for r in records])
    ax.set(xlabel="step", ylabel=key, title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_parent(stage: str, *, train: TrainSpec, resolved: dict, tags: dict[str, str]) -> None:
    from bar import launch, tracking
    from bar.model.hf import export
    from bar.tokenizer import load as load_tokenizer
    from bar.train.checkpoint import read_meta
    from safetensors.torch import load_file

    root = CHECKPOINTS / stage
    with tracking.stage_run(stage, spec=resolved, tags=tags) as run:
        try:
            launch.torchrun(f"bar.stages.{stage}", train.tp_size, ["--worker"])
        finally:
            if (root / "log.jsonl").exists():
                run.log_history(read_jsonl(root / "log.jsonl"))
        meta = read_meta(root / "final")
        if meta is None:
            raise SystemExit(f"{stage}: workers exited without a complete {root / 'final'}")
        config = meta["config"]
        with atomic_dir(output(stage)) as out:
            shutil.copy(root / "final" / "model.safetensors", out / "model.safetensors")
            write_json(out / "config.json", {**config, "spec": resolved})
            write_json(out / "train_log.json", meta["log"])
            write_json(out / "eval.json", meta["eval"])
            plot_curve(meta["log"], "loss", out / "loss.png", f"{stage}: training loss")
            export(load_file(out / "model.safetensors"), ModelSpec(**config["arch"]),
                   load_tokenizer(output("tokenizer")), out / "hf")
        log = meta["log"]
        tail = log[-max(1, len(log) // 10):]
        metrics = {"final_loss": sum(r["loss"] for r in tail) / len(tail),
                   "tokens_trained": sum(r["tokens"] for r in log), "steps": len(log)}
        metrics |= {f"eval/{d}": s["pass_rate"] for d, s in meta["eval"].items()}
        write_metrics(stage, metrics)
        run.log_metrics(metrics)
        run.log_artifact(output(stage, "loss.png"))
        run.log_dict(meta["eval"], "eval.json")
        shutil.rmtree(root)
