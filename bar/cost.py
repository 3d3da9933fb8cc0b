"""Training cost as an analytic FLOP count: what upgrading one expert is compared by.

Forward FLOPs per token = 2 x (multiply-accumulates of every weight matrix the token passes
through) + attention, 2 x 2 x seq_length x (heads x head_dim) per layer (scores and weighted
values; the causal mask is not discounted). The FFN is SwiGLU (three matrices); an MoE with
every expert active (the BAR default) runs all `num_experts` FFNs on every token, plus the
router. Training a token costs 3 forward passes (forward + backward, the 6N rule of Kaplan et
al. 2020). An RLVR token costs 5: sampling it, the old-policy log-probability, and the
forward + backward of the update.
"""

from __future__ import annotations

from bar.specs import ModelSpec

PASSES = {"rlvr": 5}  # forward-pass equivalents per trained token; every other phase: 3


def forward_flops_per_token(arch: ModelSpec, num_experts: int | None = None) -> float:
    h, layers, head_dim = arch.hidden_size, arch.num_layers, arch.head_dim
    q = arch.num_attention_heads * head_dim
    kv = 2 * arch.num_query_groups * head_dim
    attention_weights = h * (q + kv) + q * h
    ffn = 3 * h * arch.ffn_hidden_size * (num_experts or 1) + (h * num_experts if num_experts else 0)
    attention_scores = 2 * arch.seq_length * q
    return 2 * (layers * (attention_weights + ffn + attention_scores) + h * arch.vocab_size)


def training_flops(arch: ModelSpec, tokens_by_phase: dict[str, int], num_experts: int | None = None) -> float:
    """FLOPs of training `tokens_by_phase` ({phase: tokens}) on this architecture."""
    per_token = forward_flops_per_token(arch, num_experts)
    return sum(PASSES.get(phase, 3) * per_token * tokens for phase, tokens in tokens_by_phase.items())
