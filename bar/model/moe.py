"""Mixture-of-experts layouts of the dense model: branching (upcycling) and parameter groups.

All functions work on full tensors with Megatron-Core names. In an MoE model each layer's
MLP is `mlp.router.weight` [num_experts, hidden] and `mlp.experts.local_experts.<i>.linear_fc{1,2}`;
expert slot 0 is always the anchor's FFN.
"""

from __future__ import annotations

import re

import torch

ANCHOR_SLOT = 0
_DENSE_MLP = re.compile(r"^decoder\.layers\.(\d+)\.mlp\.(linear_fc[12]\.weight)$")
_EXPERT = re.compile(r"^decoder\.layers\.(\d+)\.mlp\.experts\.local_experts\.(\d+)\.(linear_fc[12]\.weight)$")
_ROUTER = re.compile(r"^decoder\.layers\.(\d+)\.mlp\.router\.weight$")


def expert_name(layer: int, slot: int, linear: str) -> str:
    return f"decoder.layers.{layer}.mlp.experts.local_experts.{slot}.{linear}"


def router_name(layer: int) -> str:
    return f"decoder.layers.{layer}.mlp.router.weight"


def upcycle(anchor: dict[str, torch.Tensor], base: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """Branch: a 2-slot MoE whose slot 0 is the anchor FFN and slot 1 the pre-trained base FFN.

    Everything else (embeddings, attention, norms, LM head) comes from the anchor. The router
    starts at zero: both slots weigh 1/2 until the domain row learns otherwise.
    """
    out = {}
    hidden = anchor["embedding.word_embeddings.weight"].size(1)
    for name, tensor in anchor.items():
        m = _DENSE_MLP.match(name)
        if m is None:
            out[name] = tensor.clone()
            continue
        layer, linear = int(m.group(1)), m.group(2)
        out[expert_name(layer, ANCHOR_SLOT, linear)] = tensor.clone()
        out[expert_name(layer, 1, linear)] = base[name].clone()
    for layer in range(num_layers):
        out[router_name(layer)] = torch.zeros(2, hidden)
    return out


def group_of(name: str) -> str | None:
    """The trainable group a parameter belongs to. The FFN of a dense model (a baseline trained on
    an expert's phases) counts as `domain_ffn`; an MoE's slot 0 is `anchor_ffn`."""
    m = _EXPERT.match(name)
    if m:
        return "anchor_ffn" if int(m.group(2)) == ANCHOR_SLOT else "domain_ffn"
    if _DENSE_MLP.match(name):
        return "domain_ffn"
    if _ROUTER.match(name):
        return "router"
    if name.startswith("embedding."):
        return "embeddings"
    if name.startswith("output_layer."):
        return "lm_head"
    if ".self_attention." in name:
        return "attention"
    if name.endswith("layernorm.weight"):
        return "norms"
    raise ValueError(f"parameter {name} belongs to no group")


def set_trainable(model, groups: list[str], freeze_anchor_row: bool = True) -> list[str]:
    """requires_grad for the parameters of `groups` only (the anchor FFN only if `anchor_ffn` is
    one); in an expert (`freeze_anchor_row`) the router's anchor row never trains. Returns the
    trainable names."""
    names = []
    for name, p in model.named_parameters():
        p.requires_grad_(group_of(name) in groups)
        if p.requires_grad:
            names.append(name)
        if freeze_anchor_row and p.requires_grad and _ROUTER.match(name) and not hasattr(p, "_bar_anchor_row_hook"):
            # The anchor's routing logit stays fixed: every expert shares it, so merging
            # experts needs no choice for it.
            mask = torch.ones_like(p)
            mask[ANCHOR_SLOT] = 0
            p._bar_anchor_row_hook = p.register_hook(lambda g, mask=mask: g * mask)
    return names


def anchor_ffn(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The anchor's FFN tensors inside an MoE state (slot 0), keyed by their dense names."""
    out = {}
    for name, tensor in state.items():
        m = _EXPERT.match(name)
        if m and int(m.group(2)) == ANCHOR_SLOT:
            out[f"decoder.layers.{m.group(1)}.mlp.{m.group(3)}"] = tensor
    return out
