"""The analytic FLOP count agrees with the parameters Megatron-Core actually builds."""

import pytest

from bar.cost import assembly, forward_flops_per_token, frozen_matmuls, training_flops
from bar.model import build
from bar.specs import ModelSpec

ARCH = ModelSpec(
    num_layers=2,
    hidden_size=64,
    num_attention_heads=4,
    num_query_groups=2,
    ffn_hidden_size=176,
    vocab_size=512,
    seq_length=128,
)


@pytest.mark.parametrize("num_experts", [None, 3])
def test_matmul_flops_are_twice_the_matrix_parameters(megatron, num_experts):
    model = build(ARCH, 1, num_experts=num_experts)
    # Every weight matrix except the embedding table (a lookup) is one multiply-accumulate
    # per entry per token; norms are vectors.
    matrices = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "word_embeddings" not in n)
    attention = 2 * ARCH.num_layers * 2 * ARCH.seq_length * ARCH.num_attention_heads * ARCH.head_dim
    assert forward_flops_per_token(ARCH, num_experts) == 2 * matrices + attention


def test_a_sliding_window_layer_scores_its_window_of_keys():
    """Olmo 3's layout: layer 0 slides over 32 of the 128 tokens, layer 1 attends to them all."""
    olmo3 = ARCH.model_copy(update={"sliding_window": 32, "layer_types": ["sliding_attention", "full_attention"]})
    per_key = 2 * 2 * ARCH.num_attention_heads * ARCH.head_dim
    assert forward_flops_per_token(ARCH) - forward_flops_per_token(olmo3) == per_key * (128 - 32)
    wide = ARCH.model_copy(update={"sliding_window": 4096})  # a window longer than the rows changes nothing
    assert forward_flops_per_token(wide) == forward_flops_per_token(ARCH)


def test_training_is_three_forward_passes_and_rlvr_five():
    per_token = forward_flops_per_token(ARCH)
    assert training_flops(ARCH, {"sft": 10}) == 30 * per_token
    assert training_flops(ARCH, {"midtrain": 10, "rlvr": 2}) == 40 * per_token


def test_frozen_matrices_save_their_weight_gradients(megatron):
    """Each frozen weight matrix saves 2 FLOPs per entry per token (its weight gradient): the
    anchor's FFN slot unless a phase trains it (an ablation), and whatever a phase does not train."""
    model = build(ARCH, 1, num_experts=2)

    def matmuls(keep) -> int:
        return sum(
            p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "word_embeddings" not in n and keep(n)
        )

    sft = ["domain_ffn", "router", "embeddings", "lm_head"]
    frozen = matmuls(lambda n: "self_attention" in n or "local_experts.0." in n)
    assert frozen_matmuls(ARCH, 2, sft) == frozen
    assert frozen_matmuls(ARCH, 2, [*sft, "anchor_ffn"]) == matmuls(lambda n: "self_attention" in n)
    assert frozen_matmuls(ARCH, 2, ["router"]) == matmuls(lambda n: ".mlp.router." not in n)
    assert frozen_matmuls(ARCH, None, None) == 0
    per_token = forward_flops_per_token(ARCH, 2)
    assert training_flops(ARCH, {"sft": 10, "midtrain": 5}, 2, {"sft": sft}) == 45 * per_token - 20 * frozen
    # rlvr trains everything but the anchor's slot
    rlvr = ["domain_ffn", "router", "embeddings", "lm_head", "attention", "norms"]
    anchor_slot = matmuls(lambda n: "local_experts.0." in n)
    assert training_flops(ARCH, {"rlvr": 1}, 2, {"rlvr": rlvr}) == 5 * per_token - 2 * anchor_slot


def test_assembly_counts_what_was_rerun_against_a_dense_retrain():
    def run(rid, flops, dense):
        return {
            "run_id": rid,
            "metrics": {"cost/flops": flops, "cost/flops_from_scratch": flops, "cost/dense_flops": dense},
        }

    first = {
        "anchor": run("a", 10, 10),
        "experts": {"math": run("m1", 6, 5), "code": run("c1", 4, 3)},
        "router": run("r1", 1, 1),
        "previous": None,
    }
    upgrade = {
        **first,
        "experts": {"math": run("m1", 6, 5), "code": run("c2", 2, 4)},
        "router": run("r2", 1, 1),
        "previous": first,
    }
    assert assembly(ARCH, first)["upgrade_flops"] == 10 + 6 + 4 + 1
    out = assembly(ARCH, upgrade)
    assert out["rerun"] == "code,router" and out["upgrade_flops"] == 2 + 1
    assert out["retrain_flops"] == 10 + 5 + 4 and out["upgrade_ratio"] == 3 / 19


def test_assembly_of_components_without_recorded_training_is_empty():
    """Experts trained elsewhere (no training runs in this store): no cost to compare, no crash."""
    unknown = {"run_id": None, "metrics": {}}
    lineage = {
        "anchor": unknown,
        "experts": {"math": unknown},
        "router": {"run_id": "r", "metrics": {}},
        "previous": None,
    }
    assert assembly(ARCH, lineage) == {}
