"""The analytic FLOP count agrees with the parameters Megatron-Core actually builds."""

import pytest

from bar.cost import forward_flops_per_token, training_flops
from bar.model import build
from bar.specs import ModelSpec

ARCH = ModelSpec(num_layers=2, hidden_size=64, num_attention_heads=4, num_query_groups=2,
                 ffn_hidden_size=176, vocab_size=512, seq_length=128)


@pytest.mark.parametrize("num_experts", [None, 3])
def test_matmul_flops_are_twice_the_matrix_parameters(megatron, num_experts):
    model = build(ARCH, 1, num_experts=num_experts)
    # Every weight matrix except the embedding table (a lookup) is one multiply-accumulate
    # per entry per token; norms are vectors.
    matrices = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "word_embeddings" not in n)
    attention = 2 * ARCH.num_layers * 2 * ARCH.seq_length * ARCH.num_attention_heads * ARCH.head_dim
    assert forward_flops_per_token(ARCH, num_experts) == 2 * matrices + attention


def test_training_is_three_forward_passes_and_rlvr_five():
    per_token = forward_flops_per_token(ARCH)
    assert training_flops(ARCH, {"sft": 10}) == 30 * per_token
    assert training_flops(ARCH, {"midtrain": 10, "rlvr": 2}) == 40 * per_token
