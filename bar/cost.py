"""Training cost as an analytic FLOP count: what upgrading one expert is compared by.

Forward FLOPs per token = 2 x (multiply-accumulates of every weight matrix the token passes
through) + attention, 2 x 2 x seq_length x (heads x head_dim) per layer (scores and weighted
values; the causal mask is not discounted; a sliding-window layer's window if it is shorter).
The FFN is SwiGLU (three matrices); an MoE with every expert active (the BAR default) runs all
`num_experts` FFNs on every token, plus the router. Training a token costs the forward pass, the
backward pass through the activations (about one more forward: 2 x 2 x multiply-accumulates and
twice the attention) and the weight gradients of the matrices that train (2 x their
multiply-accumulates). With every weight training that is 3 forward passes (the 6N rule of
Kaplan et al. 2020); a frozen matrix (the anchor's FFN in an expert, everything but the router
in router fitting) saves its weight gradients. An RLVR token costs 2 forward passes more:
sampling it and the old-policy log-probability.

`cost/dense_flops` of a run: the same tokens through the same phases on the dense model of the
anchor's shape with every weight training, i.e. what a monolithic retrain spends on that data.
"""

from __future__ import annotations

from bar.specs import ModelSpec

PASSES = {"rlvr": 5}  # forward-pass equivalents per trained token, every weight training; else 3


def forward_flops_per_token(arch: ModelSpec, num_experts: int | None = None) -> float:
    h, layers, head_dim = arch.hidden_size, arch.num_layers, arch.head_dim
    q = arch.num_attention_heads * head_dim
    kv = 2 * arch.num_query_groups * head_dim
    attention_weights = h * (q + kv) + q * h
    ffn = 3 * h * arch.ffn_hidden_size * (num_experts or 1) + (h * num_experts if num_experts else 0)
    # A sliding-window layer scores at most its window of keys.
    keys = sum(min(arch.seq_length, arch.window(i) or arch.seq_length) for i in range(layers))
    return 2 * (layers * (attention_weights + ffn) + 2 * keys * q + h * arch.vocab_size)


def frozen_matmuls(arch: ModelSpec, num_experts: int | None, trainable: list[str] | None) -> int:
    """Multiply-accumulates per token of the weight matrices that do not train (`trainable`:
    the groups that do, as in expert specs; None: every weight). They need no weight gradient."""
    if trainable is None:
        return 0
    h, layers, head_dim = arch.hidden_size, arch.num_layers, arch.head_dim
    q, kv = arch.num_attention_heads * head_dim, 2 * arch.num_query_groups * head_dim
    ffn = 3 * h * arch.ffn_hidden_size
    frozen = 0 if "attention" in trainable else layers * (h * (q + kv) + q * h)
    if num_experts:
        frozen += 0 if "anchor_ffn" in trainable else layers * ffn  # the anchor's slot, frozen unless listed
        frozen += 0 if "domain_ffn" in trainable else layers * ffn * (num_experts - 1)
        frozen += 0 if "router" in trainable else layers * h * num_experts
    elif "domain_ffn" not in trainable:  # a dense model's FFN is what its phases train as domain_ffn
        frozen += layers * ffn
    return frozen + (0 if "lm_head" in trainable else h * arch.vocab_size)


def training_flops(
    arch: ModelSpec,
    tokens_by_phase: dict[str, int],
    num_experts: int | None = None,
    trainable: dict[str, list[str]] | None = None,
) -> float:
    """FLOPs of training `tokens_by_phase` ({phase: tokens}) on this architecture; `trainable`
    ({phase: groups}) names what trains in each phase (a phase not listed: every weight)."""
    per_token = forward_flops_per_token(arch, num_experts)
    return sum(
        tokens
        * (
            PASSES.get(phase.partition(".")[0], 3) * per_token  # rlvr.math: an RLVR phase
            - 2 * frozen_matmuls(arch, num_experts, (trainable or {}).get(phase))
        )
        for phase, tokens in tokens_by_phase.items()
    )


# --- the assembly: what an upgrade cost against retraining one dense model on everything ---


def assembly(arch: ModelSpec, lineage: dict) -> dict[str, float | str]:
    """Upgrade vs retrain for a routed model (`bar.tracking.routed_lineage`).

    Upgrade: the training FLOPs of what was re-run for this routed model, i.e. every component
    whose run differs from the previous routed model's (everything for the first one) plus the
    router; an expert run that started from phases of its previous version counts only the
    phases it trained. Retrain: a monolithic dense model trained on the anchor's data and every expert's
    data through the same phases (each run's `cost/dense_flops`; the pre-trained base is an
    input of both)."""
    previous = lineage["previous"]
    parts = {"anchor": lineage["anchor"], **lineage["experts"]}
    old = {"anchor": previous["anchor"], **previous["experts"]} if previous else {}
    rerun = [k for k, p in parts.items() if k not in old or old[k]["run_id"] != p["run_id"]] + ["router"]
    parts["router"] = lineage["router"]
    upgrade = sum(parts[k]["metrics"].get("cost/flops", 0.0) for k in rerun)
    retrain = _retrain(lineage, list(lineage["experts"]))
    if retrain <= 0:  # the components' training runs are not in this MLflow store: no cost to compare
        return {}
    return {
        "upgrade_flops": upgrade,
        "retrain_flops": retrain,
        "upgrade_ratio": upgrade / retrain,
        "upgrade_wall_seconds": sum(parts[k]["metrics"].get("cost/wall_seconds", 0.0) for k in rerun),
        "rerun": ",".join(rerun),
    }


def from_scratch(metrics: dict) -> float:
    """Training FLOPs of a model from its inputs, phases it started from included."""
    return metrics.get("cost/flops_from_scratch", metrics.get("cost/flops", 0.0))


def _retrain(lineage: dict, experts: list[str]) -> float:
    """A dense model trained on the anchor's and `experts`' data, every weight training."""

    def dense(metrics: dict) -> float:
        return metrics.get("cost/dense_flops", from_scratch(metrics))

    return dense(lineage["anchor"]["metrics"]) + sum(dense(lineage["experts"][e]["metrics"]) for e in experts)


def curve(arch: ModelSpec, lineage: dict) -> list[dict[str, float]]:
    """Cost of adding the k-th domain, k = 1..N (experts in merge order): with BAR, expert k plus
    a router fitted over k + 1 slots on k domains' sample (its tokens grow with k); retraining,
    one dense model on the anchor's and k domains' data."""
    names = list(lineage["experts"])
    n, router = len(names), lineage["router"]["metrics"].get("cost/flops", 0.0)
    rows = []
    for k in range(1, n + 1):
        router_k = router * k / n * forward_flops_per_token(arch, k + 1) / forward_flops_per_token(arch, n + 1)
        rows.append(
            {
                "domains": k,
                "upgrade_flops": from_scratch(lineage["experts"][names[k - 1]]["metrics"]) + router_k,
                "retrain_flops": _retrain(lineage, names[:k]),
            }
        )
    return rows
