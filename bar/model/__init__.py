"""The model: a Megatron-Core GPT (local layer spec) of a `ModelSpec`, dense or MoE.

RMSNorm, SwiGLU, RoPE, grouped-query attention, no biases, untied embeddings; parameters in
the spec's precision (float32 or bfloat16). The norms go where the spec's `family` puts them:
before the attention and the MLP (llama), with QK-norm per head (qwen3), or after them with QK-norm
over the whole projections (olmo2): `bar.model.norms`. Layers may attend over a sliding window
(Mistral, Olmo 3: `ModelSpec.window`).
Architecture only: how it is parallelised lives in `bar.parallel`, how it trains in `bar.train`.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F

from bar.specs import ModelSpec


def transformer_config(
    arch: ModelSpec,
    tp_size: int,
    num_experts: int | None = None,
    topk: int | None = None,
    z_loss: float = 0.0,
    load_balancing: float = 0.0,
):
    from megatron.core.transformer.transformer_config import TransformerConfig

    moe = {}
    if num_experts:
        moe = dict(
            num_moe_experts=num_experts,
            moe_router_topk=topk or num_experts,
            moe_token_dispatcher_type="allgather",
            moe_router_load_balancing_type="aux_loss" if load_balancing else "none",
            moe_aux_loss_coeff=load_balancing,
            moe_z_loss_coeff=z_loss or None,
            moe_grouped_gemm=False,
            moe_router_dtype="fp32",
            moe_ffn_hidden_size=arch.ffn_hidden_size,
        )
    return TransformerConfig(
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        num_attention_heads=arch.num_attention_heads,
        num_query_groups=arch.num_query_groups,
        ffn_hidden_size=arch.ffn_hidden_size,
        kv_channels=arch.head_dim,
        normalization="RMSNorm",
        layernorm_epsilon=arch.norm_eps,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=arch.init_std,
        tensor_model_parallel_size=tp_size,
        # Megatron-Core's MoE under tensor parallelism needs the sequence split over the ranks
        # between the layers; dense models keep it whole.
        sequence_parallel=bool(num_experts) and tp_size > 1,
        use_cpu_initialization=True,
        params_dtype=arch.dtype,
        pipeline_dtype=arch.dtype,
        bf16=arch.precision == "bf16",
        # Fused kernels are CUDA-only.
        bias_activation_fusion=False,
        bias_dropout_fusion=False,
        masked_softmax_fusion=False,
        apply_rope_fusion=False,
        gradient_accumulation_fusion=False,
        persist_layer_norm=False,
        **(
            dict(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1)
            if arch.recompute
            else {}
        ),
        **moe,
    )


def layer_spec(family: str, num_experts: int | None = None, window: int | None = None):
    """Megatron-Core's local layer spec with bar's attention modules, its norms where `family` puts
    them; `window`: a sliding-window layer's (`bar.model.attention.SDPAttention`)."""
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.transformer.spec_utils import ModuleSpec

    from bar.model.attention import CachedRopeSelfAttention, SDPAttention
    from bar.model.norms import HeadRMSNorm, ProjectionRMSNorm, RMSNorm, post_norm_spec

    spec = get_gpt_layer_local_spec(num_experts=num_experts, moe_grouped_gemm=False, normalization="RMSNorm")
    spec.submodules.input_layernorm = spec.submodules.pre_mlp_layernorm = RMSNorm
    attention = spec.submodules.self_attention
    attention.module = CachedRopeSelfAttention
    attention.submodules.core_attention = ModuleSpec(module=SDPAttention, params={"window": window})
    if family == "olmo2":
        attention.submodules.q_layernorm = ModuleSpec(module=ProjectionRMSNorm, params={"projection": "query"})
        attention.submodules.k_layernorm = ModuleSpec(module=ProjectionRMSNorm, params={"projection": "key"})
        spec = post_norm_spec(spec)
    elif family == "qwen3":
        attention.submodules.q_layernorm = attention.submodules.k_layernorm = HeadRMSNorm
    return spec


def build(
    arch: ModelSpec,
    tp_size: int = 1,
    num_experts: int | None = None,
    topk: int | None = None,
    z_loss: float = 0.0,
    load_balancing: float = 0.0,
    device=None,
    initialize: bool = True,
):
    """A GPTModel on this rank's device (call `bar.parallel.init` first), its parameters in the
    spec's precision; `initialize=False` leaves the weights unset, for a caller that loads every
    one (an import: initialising a 7B model's weights would take minutes).

    Weights are initialised on the CPU in float32 and then cast (`use_cpu_initialization`), so a
    seed gives the same model at every precision and tensor-parallel size. Megatron-Core's own
    bf16 wrapper, `Float16Module`, is not used: it would rename every parameter (`module.`) and
    only casts floating-point inputs and outputs, and bar's inputs are token ids and its losses
    are computed in float32 (`vocab_parallel_cross_entropy` upcasts the logits). `device`: the
    rank's (`bar.parallel.device`) unless given; on the meta device nothing is allocated or
    initialised (`bar.plan`)."""
    from bar import parallel

    config = transformer_config(arch, tp_size, num_experts, topk, z_loss, load_balancing)
    config.perform_initialization = initialize
    device = torch.device(device) if device is not None else parallel.device()
    if device.type == "meta":  # initialising on meta computes nothing, and sets the tensor-parallel attributes
        with device:
            return _gpt(config, arch, num_experts).to(dtype=arch.dtype)
    model = _gpt(config, arch, num_experts).to(device=device, dtype=arch.dtype)
    if not initialize:
        _take_parallel_attributes(model, config, arch, num_experts)
    if arch.recompute:
        # Megatron-Core recomputes each layer inside an autograd function, which passes gradients only
        # to inputs that need them: with the embeddings frozen (an expert's midtrain, the router)
        # nothing before the first layer would, and the layers' weights would get no gradient.
        # transformers' `enable_input_require_grads` does the same for its gradient checkpointing.
        model.embedding.register_forward_hook(_needs_grad)
    return model


_PARALLEL_ATTRIBUTES = ("tensor_model_parallel", "partition_dim", "partition_stride")


def _take_parallel_attributes(model, config, arch: ModelSpec, num_experts: int | None) -> None:
    """Megatron-Core tags a parameter as a tensor-parallel shard (`_PARALLEL_ATTRIBUTES`) while it
    initialises it: a model built without initialising takes the tags of one initialised on the
    meta device (no memory, no compute), so its shards load and gather (`bar.parallel.local_shard`)."""
    import copy

    config = copy.copy(config)
    config.perform_initialization = True
    with torch.device("meta"):
        tagged = dict(_gpt(config, arch, num_experts).named_parameters())
    for name, p in model.named_parameters():
        for attr in _PARALLEL_ATTRIBUTES:
            if hasattr(tagged[name], attr):
                setattr(p, attr, getattr(tagged[name], attr))


def _needs_grad(module, args, out: torch.Tensor) -> None:
    if torch.is_grad_enabled() and not out.requires_grad:
        out.requires_grad_()


def _gpt(config, arch: ModelSpec, num_experts: int | None):
    from megatron.core.models.gpt import GPTModel
    from megatron.core.transformer.transformer_block import TransformerBlockSubmodules

    from bar.model.norms import RMSNorm

    layers = [layer_spec(arch.family, num_experts, arch.window(i)) for i in range(arch.num_layers)]
    block = TransformerBlockSubmodules(layers, layer_norm=RMSNorm)
    return GPTModel(
        config=config,
        transformer_layer_spec=block,
        vocab_size=arch.vocab_size,
        max_sequence_length=arch.seq_length,
        pre_process=True,
        post_process=True,
        parallel_output=True,
        share_embeddings_and_output_weights=False,
        position_embedding_type="rope",
        rotary_base=int(arch.rope_base),
        rope_scaling=arch.rope_scaling_factor is not None,
        rope_scaling_factor=arch.rope_scaling_factor or 8.0,
    )


def init_added_tokens(state: dict[str, torch.Tensor], added: list[int], vocab: int) -> dict[str, torch.Tensor]:
    """`state` with the embedding and LM-head rows of `added` token ids set to the mean row of
    the tokenizer's other tokens (ids below `vocab`; the rows above it only pad the matrix).

    This is how `transformers` initialises tokens added to a trained model
    (`resize_token_embeddings(mean_resizing=True)`): every added token starts with the same
    input vector and the same output row, so a model whose embeddings and LM head stay
    frozen can neither tell them apart nor emit one rather than another.
    """
    return dict(with_added_tokens(state.items(), added, vocab))


_TOKEN_ROWS = ("embedding.word_embeddings.weight", "output_layer.weight")


def with_added_tokens(tensors: Iterable[tuple[str, torch.Tensor]], added: list[int], vocab: int):
    """`init_added_tokens` over (name, tensor) pairs as they come (an import streams them)."""
    keep = torch.ones(vocab, dtype=torch.bool)
    keep[list(added)] = False
    for name, w in tensors:
        if name in _TOKEN_ROWS:
            w = w.clone()
            w[list(added)] = w[:vocab][keep].mean(0)
        yield name, w
