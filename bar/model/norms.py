"""The norms of OLMo 2's and Qwen3's layers that Megatron-Core's has no slot or module for.

OLMo 2 normalises each sublayer's output before the residual add (x + norm(attention(x)), then
x + norm(mlp(x))) and nothing before; Megatron-Core 0.16's `TransformerLayer` has norm slots
before the attention and the MLP only. `PostNormLayer` adds two slots after them.

OLMo 2 also normalises the whole query projection (all heads at once) and the whole key
projection before RoPE; Megatron-Core's `q_layernorm`/`k_layernorm` slots hold a norm over
one head. `ProjectionRMSNorm` fills those slots with a norm over every head, whose mean of
squares sums over the tensor-parallel ranks when the heads are split among them.

Under sequence parallelism (an MoE at tp > 1) each rank normalises its own slice of the sequence,
so the gradient of a norm's weight covers that slice only: `RMSNorm` is torch's, built with
Megatron-Core's signature, its weight tagged `sequence_parallel` as Megatron-Core tags the
router's, and `bar.train.optimizer` sums the gradients of tagged weights over the ranks (Megatron-Core's
`finalize_model_grads` does; its own torch norm refuses sequence parallelism without Apex).

Qwen3 normalises each query and key head with one weight shared by the heads: Megatron-Core's
per-head norm (torch's RMSNorm), but each rank's gradient of that weight covers its own heads
only, and Megatron-Core sums them in `finalize_model_grads`, which bar's training loop does not
use. `HeadRMSNorm` sums them in its backward pass.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

import torch
from megatron.core import parallel_state
from megatron.core.tensor_parallel.layers import set_tensor_model_parallel_attributes
from megatron.core.tensor_parallel.mappings import copy_to_tensor_model_parallel_region
from megatron.core.transformer.identity_op import IdentityOp
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.spec_utils import ModuleSpec, build_module
from megatron.core.transformer.transformer_layer import TransformerLayer, TransformerLayerSubmodules
from torch.distributed.nn.functional import all_reduce


class RMSNorm(torch.nn.RMSNorm):
    """torch's RMSNorm over the hidden size, its weight tagged when the sequence is split over the ranks."""

    def __init__(self, config, hidden_size: int, eps: float = 1e-5):
        super().__init__(hidden_size, eps=eps)
        self.weight.sequence_parallel = config.sequence_parallel


@dataclass
class PostNormLayerSubmodules(TransformerLayerSubmodules):
    post_self_attn_layernorm: ModuleSpec | type = IdentityOp
    post_mlp_layernorm: ModuleSpec | type = IdentityOp


class PostNormLayer(TransformerLayer):
    """A `TransformerLayer` that normalises the attention's and the MLP's outputs before adding
    them to the residual (in its bias-dropout-add steps, where Megatron-Core adds them)."""

    def __init__(self, config, submodules: PostNormLayerSubmodules, *args, **kwargs):
        super().__init__(config, submodules, *args, **kwargs)
        norm = dict(config=config, hidden_size=config.hidden_size, eps=config.layernorm_epsilon)
        self.post_self_attn_layernorm = build_module(submodules.post_self_attn_layernorm, **norm)
        self.post_mlp_layernorm = build_module(submodules.post_mlp_layernorm, **norm)
        self.self_attn_bda = _normed(self.self_attn_bda, self.post_self_attn_layernorm)
        self.mlp_bda = _normed(self.mlp_bda, self.post_mlp_layernorm)


def _normed(bda, norm):
    """`bda` (Megatron-Core's bias-dropout-add factory) applied to norm(output); bar's linears have no bias."""

    def factory(training: bool, fused: bool):
        add = bda(training, fused)
        return lambda x_with_bias, residual, prob: add((norm(x_with_bias[0]), x_with_bias[1]), residual, prob)

    return factory


def post_norm_spec(spec: ModuleSpec) -> ModuleSpec:
    """OLMo 2's layer from a pre-norm layer spec: its norms moved after the attention and the MLP."""
    sub = spec.submodules
    norm = sub.input_layernorm
    submodules = PostNormLayerSubmodules(
        **{f.name: getattr(sub, f.name) for f in fields(sub)},
        post_self_attn_layernorm=norm,
        post_mlp_layernorm=norm,
    )
    submodules.input_layernorm = submodules.pre_mlp_layernorm = IdentityOp
    return ModuleSpec(module=PostNormLayer, params=spec.params, submodules=submodules)


class ProjectionRMSNorm(MegatronModule):
    """RMSNorm over a whole projection (every query head, or every key head), applied to this
    rank's heads ([..., heads, head_dim]); its weight is split over the ranks as the heads are.

    Built by Megatron-Core's attention with `hidden_size` = head_dim, which it ignores."""

    def __init__(self, config, hidden_size: int, eps: float, projection: Literal["query", "key"]):
        super().__init__(config=config)
        heads = config.num_attention_heads if projection == "query" else config.num_query_groups
        self.tp_size = parallel_state.get_tensor_model_parallel_world_size()
        self.size, self.eps = heads * config.kv_channels, eps
        # Made where the rest of the model is (use_cpu_initialization: the CPU, or the meta device of
        # bar.plan); bar.model.build then moves the model to the rank's device.
        device = torch.get_default_device()
        self.weight = torch.nn.Parameter(
            torch.ones(self.size // self.tp_size, dtype=config.params_dtype, device=device)
        )
        set_tensor_model_parallel_attributes(self.weight, is_parallel=True, dim=0, stride=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(-2).float()
        squares = flat.pow(2).sum(-1, keepdim=True)
        if self.tp_size > 1:  # the sum over every head; its gradient is summed over the ranks too
            squares = all_reduce(squares, group=parallel_state.get_tensor_model_parallel_group())
        normed = flat * torch.rsqrt(squares / self.size + self.eps)
        return (self.weight * normed).to(x.dtype).view_as(x)


class HeadRMSNorm(MegatronModule):
    """RMSNorm over each head ([..., head_dim]), one weight for every head, its gradient summed
    over the tensor-parallel ranks (each holds some of the heads)."""

    def __init__(self, config, hidden_size: int, eps: float):
        super().__init__(config=config)
        self.eps = eps
        device = torch.get_default_device()  # as ProjectionRMSNorm's
        self.weight = torch.nn.Parameter(torch.ones(hidden_size, dtype=config.params_dtype, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = copy_to_tensor_model_parallel_region(self.weight, parallel_state.get_tensor_model_parallel_group())
        return torch.nn.functional.rms_norm(x, x.shape[-1:], weight, self.eps)
