"""`bar plan`: the memory each training stage needs per rank, before anything runs.

Each stage's model is built on the meta device (no memory): its parameters, which of them are
sharded under tensor parallelism (Megatron-Core's `tensor_model_parallel` attribute) and which
train in each phase (`bar.model.moe.set_trainable`) are the model's own. Per rank, at the
spec's precision:

- weights: every parameter, 2 bytes in bf16 or 4 in fp32, sharded ones divided by tp;
- gradients: what trains, accumulated in fp32 (4 bytes);
- main weights: an fp32 copy of what trains when the model is in bf16 (`bar.train.optimizer`);
- optimizer: AdamW's two fp32 moments of what trains (8 bytes); with a distributed optimizer
  over dp ranks the main weights and the moments are divided by dp;
- activations: what autograd keeps for the backward pass of one micro-batch (counted below,
  per token and layer, from the layer's operations), divided by tp where tensor parallelism
  splits it, times WORKING: the backward pass's gradient buffers and temporaries on top of
  what is kept (measured on this machine's CPU at two model sizes and both precisions:
  benchmarks/plan_memory.py; a GPU's caching allocator differs, so leave a margin there).

Activations per token and layer, in elements of the model's precision: the two norms' inputs
and outputs (4h), the fused QKV output (q + 2kv), RoPE's rotated query and key (q + kv), the
attention output (q); the dense SwiGLU FFN keeps its fc1 output (2f), the SiLU output and the
product (2f); an MoE keeps, per active expert, the permuted input and the weighted output (2h)
and the same 4f. After the last layer: the final norm (2h), the logits (V) and their fp32
softmax (4V bytes). SDPA keeps no score matrix (a flash kernel) and document masks are ids. With
`recompute`, each layer keeps its input (h) and one layer at a time the rest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from bar.specs import ModelSpec

GB = 1e9
WORKING = 1.75  # peak activation memory / what autograd keeps (benchmarks/plan_memory.py)
# An OLMo-2-7B-shaped base (32 layers, hidden 4096, FFN 11008, vocabulary 100,352, untied).
EXAMPLES = {
    "olmo2-7b": dict(
        family="olmo2",
        num_layers=32,
        hidden_size=4096,
        num_attention_heads=32,
        num_query_groups=32,
        ffn_hidden_size=11008,
        vocab_size=100352,
        seq_length=4096,
    ),
}


@dataclass(frozen=True)
class Counts:
    """Parameters of a model: (replicated, sharded) totals and what of them trains."""

    replicated: int
    sharded: int
    replicated_trained: int
    sharded_trained: int

    @property
    def total(self) -> int:
        return self.replicated + self.sharded

    @property
    def trained(self) -> int:
        return self.replicated_trained + self.sharded_trained


def count(arch: ModelSpec, num_experts: int | None, trainable: list[str] | None) -> Counts:
    """Build the model on the meta device and count its parameters (`trainable`: the groups that
    train, as in expert specs; None: every parameter). Needs `bar.parallel.init(1, ...)`."""
    import torch

    from bar.model import build
    from bar.model.moe import set_trainable

    model = build(arch, 1, num_experts=num_experts, device=torch.device("meta"))
    if trainable is not None:
        set_trainable(model, trainable, freeze_anchor_row=False)
    sums = [0, 0, 0, 0]
    for p in model.parameters():
        sharded = bool(getattr(p, "tensor_model_parallel", False))
        sums[sharded] += p.numel()
        if p.requires_grad:
            sums[2 + sharded] += p.numel()
    return Counts(*sums)


def activation_bytes(arch: ModelSpec, tokens: int, num_experts: int | None, topk: int | None, tp: int = 1) -> float:
    """What one micro-batch of `tokens` keeps for its backward pass, per rank."""
    h, f, v = arch.hidden_size, arch.ffn_hidden_size, arch.vocab_size
    q = arch.num_attention_heads * arch.head_dim
    kv = arch.num_query_groups * arch.head_dim
    size = arch.dtype.itemsize
    active = (topk or num_experts) if num_experts else 0
    split = (q + 2 * kv) + (q + kv) + q + (active * (2 * h + 4 * f) if num_experts else 4 * f)
    # Norms and residuals are replicated across tensor-parallel ranks, unless sequence
    # parallelism (an MoE under tp > 1) splits them too.
    sequence = tp if num_experts and tp > 1 else 1
    norms = 4 * h / sequence
    layer = split / tp + norms
    # Recomputation keeps each layer's input, and one layer's activations at a time in the backward pass.
    layers = arch.num_layers * h / sequence + layer if arch.recompute else arch.num_layers * layer
    per_token = layers * size + 2 * h * size + v / tp * (size + 4)
    return WORKING * tokens * per_token


def memory(
    arch: ModelSpec,
    counts: Counts,
    tokens: int,
    num_experts: int | None = None,
    topk: int | None = None,
    tp: int = 1,
    dp: int = 1,
) -> dict[str, float]:
    """Bytes per rank: weights, gradients, main weights, optimizer, activations, total."""
    size = arch.dtype.itemsize
    params = counts.replicated + counts.sharded / tp
    trained = counts.replicated_trained + counts.sharded_trained / tp
    out = {
        "weights": params * size,
        "gradients": trained * 4,
        "main weights": trained * 4 / dp if size < 4 else 0.0,
        "optimizer": trained * 8 / dp,
        "activations": activation_bytes(arch, tokens, num_experts, topk, tp),
    }
    out["total"] = sum(out.values())
    return out


def stages(specs) -> list[tuple[str, int | None, int | None, list[str] | None, int, int]]:
    """(stage, experts, topk, trainable groups, tokens per step, tp) of each training stage of
    the specs, an expert's phases one by one. RLVR counts its rollouts (prompts_per_step x
    group_size) at seq_length each: an upper bound, as rollouts are prompt + max_new_tokens long."""
    seq = specs.model.seq_length
    out = [
        ("pretrain_base", None, None, None, specs.train.pretrain.batch_size * seq, specs.train.pretrain.tp_size),
        ("train_anchor", None, None, None, specs.train.anchor.batch_size * seq, specs.train.anchor.tp_size),
    ]
    for name in specs.params.experts:
        expert = specs.expert(name)
        for phase in expert.phases.enabled():
            spec = getattr(expert.phases, phase)
            if phase == "rlvr":
                tokens = spec.prompts_per_step * spec.group_size * seq
            else:
                tokens = spec.batch_size * seq
            out.append((f"train_expert@{name} {phase}", 2, None, list(spec.trainable), tokens, expert.tp_size))
    n = len(specs.params.experts) + 1
    router = specs.router
    out.append(("fit_router", n, router.topk, list(router.trainable), router.batch_size * seq, router.tp_size))
    return out


def table(rows: list[tuple[str, dict[str, float], int]], gpu_memory: float | None) -> str:
    keys = ["weights", "gradients", "main weights", "optimizer", "activations", "total"]
    head = f"{'stage':34s} {'params':>8s} " + " ".join(f"{k:>12s}" for k in keys) + ("  fits" if gpu_memory else "")
    lines = [head, "-" * len(head)]
    for name, mem, params in rows:
        line = f"{name:34s} {params / 1e9:7.2f}B " + " ".join(f"{mem[k] / GB:10.2f}GB" for k in keys)
        if gpu_memory:
            line += "  yes" if mem["total"] <= gpu_memory * GB else "  NO"
        lines.append(line)
    return "\n".join(lines)


def example_arch(name_or_config: str, precision: str, seq_length: int | None) -> ModelSpec:
    """A named example (EXAMPLES) or a transformers config.json, as a ModelSpec."""
    if name_or_config in EXAMPLES:
        keys = dict(EXAMPLES[name_or_config])
    else:
        from bar.specs.base_model import FAMILIES

        config = json.loads(Path(name_or_config).read_text())
        heads = config["num_attention_heads"]
        head_dim = config.get("head_dim") or config["hidden_size"] // heads
        keys = dict(
            family=FAMILIES.get(config.get("model_type"), "llama"),  # where its norms go: a few weights
            kv_channels=None if head_dim * heads == config["hidden_size"] else head_dim,
            num_layers=config["num_hidden_layers"],
            hidden_size=config["hidden_size"],
            num_attention_heads=heads,
            num_query_groups=config.get("num_key_value_heads") or heads,
            ffn_hidden_size=config["intermediate_size"],
            vocab_size=config["vocab_size"],
            seq_length=config.get("max_position_embeddings", 4096),
        )
    if seq_length:
        keys["seq_length"] = seq_length
    return ModelSpec(**keys, precision=precision)
