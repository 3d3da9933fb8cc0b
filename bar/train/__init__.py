"""The training loop: build, step, log, checkpoint. Runs in every torchrun worker."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch

from bar import parallel
from bar.specs import LoopSpec, OptimSpec
from bar.train.batches import Batches
from bar.train.checkpoint import Resumable
from bar.train.optimizer import Optimizer


def lr_at(step: int, optim: OptimSpec, total: int) -> float:
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return optim.lr
    progress = (step - optim.warmup_steps) / max(1, total - optim.warmup_steps)
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if optim.schedule == "cosine" else 1 - progress
    return optim.min_lr + (optim.lr - optim.min_lr) * shape


def optimizer(model, optim: OptimSpec, lr_scale: dict[str, float] | None = None) -> Optimizer:
    """AdamW over the parameters of `model` that require grad, on fp32 main weights
    (`bar.train.optimizer`). `lr_scale` multiplies the learning rate of named parameter groups
    (`bar.model.moe.group_of`); see `set_lr`."""
    return Optimizer(model, optim, lr_scale)


def set_lr(opt: Optimizer, lr: float) -> None:
    opt.set_lr(lr)


class Log:
    """Per-step records: in memory, and appended to a JSONL file (rank 0) as they happen."""

    def __init__(self, path: Path, records: list[dict]):
        self.path, self.records = Path(path), list(records)
        if parallel.rank() == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("".join(json.dumps(r) + "\n" for r in self.records))

    def append(self, record: dict) -> None:
        self.records.append(record)
        if parallel.rank() == 0:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def resumed(meta: dict | None, ckpt: Resumable, total: int, desc: str) -> int:
    """The step a run starts from: its restored checkpoint's (said on stderr), or 0. The first
    record after a resume carries `resumed_from` (in log.jsonl, train_log.json and MLflow)."""
    if not meta:
        return 0
    if parallel.rank() == 0:
        print(f"{desc}: resuming from step {meta['step']} of {total} ({ckpt.root})", file=sys.stderr, flush=True)
    return meta["step"]


def progress(total: int, initial: int, desc: str):
    from tqdm import tqdm

    return tqdm(
        total=total, initial=initial, desc=desc, disable=parallel.rank() != 0, dynamic_ncols=True, mininterval=1.0
    )


def train(
    model,
    batches: Batches,
    spec: LoopSpec,
    ckpt: Resumable,
    desc: str,
    lr_scale: dict[str, float] | None = None,
    micro_batch_size: int | None = None,
) -> list[dict]:
    """Train the parameters of `model` that require grad for `spec.steps` steps (resuming if a
    matching checkpoint exists), `lr_scale` as in `optimizer`; returns the per-step log.

    Each step's batch is split over the data-parallel replicas (replica r takes the r-th equal
    slice of its rows) and, on each, into micro-batches of `micro_batch_size` rows (None: one),
    whose gradients accumulate; each micro-batch's loss is divided by the trained tokens of the
    whole batch, so the summed gradient is the whole batch's token mean at any split (an MoE's
    z-loss, a mean over a micro-batch's tokens, is weighed by its share of the batch's rows). A
    `batches` with `before_forward` is handed each micro-batch first (`bar.router.DomainRouting`)."""
    from megatron.core.transformer.moe.moe_utils import MoEAuxLossAutoScaler

    opt = optimizer(model, spec.optim, lr_scale)
    meta = ckpt.restore(model, opt)
    start = saved = resumed(meta, ckpt, spec.steps, desc)
    log = Log(ckpt.root / "log.jsonl", meta["log"] if meta else [])
    model.train()
    bar = progress(spec.steps, start, desc)
    replicas, replica = parallel.dp_size(), parallel.dp_rank()
    for step in range(start, spec.steps):
        lr = lr_at(step, spec.optim, spec.steps)
        set_lr(opt, lr)
        batch = batches.get(step)
        rows = len(batch["tokens"]) // replicas
        micro = micro_batch_size or rows
        num_tokens = batch["loss_mask"].sum().to(parallel.device())
        opt.zero_grad()
        loss = torch.zeros((), device=parallel.device())
        for first in range(replica * rows, (replica + 1) * rows, micro):
            part = {k: v[first : first + micro].to(parallel.device()) for k, v in batch.items()}
            MoEAuxLossAutoScaler.set_loss_scale(torch.tensor(micro / len(batch["tokens"]), device=parallel.device()))
            if hasattr(batches, "before_forward"):
                batches.before_forward(part)
            per_token = model(part["tokens"], None, part["documents"], labels=part["labels"])
            share = (per_token * part["loss_mask"]).sum() / num_tokens.clamp(min=1)
            share.backward()
            loss += share.detach()
        parallel.sum_over_replicas([loss])
        if not torch.isfinite(loss):
            last = f"step {saved} in {ckpt.root}" if saved else "none (nothing saved yet)"
            raise FloatingPointError(f"{desc}: loss is {loss.item()} at step {step + 1}; last good checkpoint: {last}")
        grad_norm = opt.step(spec.optim.grad_clip)
        log.append(
            {
                "step": step + 1,
                "loss": loss.item(),
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens": int(num_tokens),
                **({"resumed_from": start} if step == start > 0 else {}),
            }
        )
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % spec.checkpoint_every == 0 and step + 1 < spec.steps:
            ckpt.save(step + 1, model, opt, {"log": log.records})
            saved = step + 1
    bar.close()
    return log.records
