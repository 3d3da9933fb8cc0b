"""Export to a `transformers` layout: Llama for dense models, Mixtral for MoE models.

Mixtral routes like our Megatron-Core MoE: softmax over the router logits, top-k, and the
kept weights renormalised, which equals a softmax over the top-k logits (Megatron's default).

Works on full tensors with Megatron-Core names (`bar.train.checkpoint.full_state`), so it
needs neither a process group nor Megatron itself. Verified by comparing logits with the
Megatron model (tests/model/test_hf.py), not by names.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bar.specs import ModelSpec


def split_qkv(qkv: torch.Tensor, arch: ModelSpec) -> tuple[torch.Tensor, ...]:
    """Megatron's fused QKV is grouped per key/value head: [q_1..q_n, k, v] for each group."""
    groups = arch.num_query_groups
    per_group = arch.num_attention_heads // groups
    w = qkv.view(groups, per_group + 2, arch.head_dim, arch.hidden_size)
    q = w[:, :per_group].reshape(-1, arch.hidden_size)
    k = w[:, per_group].reshape(-1, arch.hidden_size)
    v = w[:, per_group + 1].reshape(-1, arch.hidden_size)
    return q, k, v


def to_hf(state: dict[str, torch.Tensor], arch: ModelSpec, vocab: int,
          num_experts: int | None = None) -> dict[str, torch.Tensor]:
    """Megatron GPT tensors -> Llama (dense) or Mixtral (MoE) tensors, vocabulary padding sliced off."""
    out = {
        "model.embed_tokens.weight": state["embedding.word_embeddings.weight"][:vocab],
        "model.norm.weight": state["decoder.final_layernorm.weight"],
        "lm_head.weight": state["output_layer.weight"][:vocab],
    }
    for i in range(arch.num_layers):
        src = f"decoder.layers.{i}."
        q, k, v = split_qkv(state[src + "self_attention.linear_qkv.weight"], arch)
        dst = f"model.layers.{i}."
        out |= {
            dst + "input_layernorm.weight": state[src + "input_layernorm.weight"],
            dst + "self_attn.q_proj.weight": q,
            dst + "self_attn.k_proj.weight": k,
            dst + "self_attn.v_proj.weight": v,
            dst + "self_attn.o_proj.weight": state[src + "self_attention.linear_proj.weight"],
            dst + "post_attention_layernorm.weight": state[src + "pre_mlp_layernorm.weight"],
        }
        if num_experts:
            experts = [src + f"mlp.experts.local_experts.{e}." for e in range(num_experts)]
            out[dst + "mlp.gate.weight"] = state[src + "mlp.router.weight"]
            # Megatron's fc1 is [gate; up], as Mixtral's fused gate_up_proj.
            out[dst + "mlp.experts.gate_up_proj"] = torch.stack([state[e + "linear_fc1.weight"] for e in experts])
            out[dst + "mlp.experts.down_proj"] = torch.stack([state[e + "linear_fc2.weight"] for e in experts])
        else:
            gate, up = state[src + "mlp.linear_fc1.weight"].chunk(2, dim=0)
            out[dst + "mlp.gate_proj.weight"] = gate
            out[dst + "mlp.up_proj.weight"] = up
            out[dst + "mlp.down_proj.weight"] = state[src + "mlp.linear_fc2.weight"]
    return {k: v.contiguous() for k, v in out.items()}


def hf_config(arch: ModelSpec, tok, num_experts: int | None = None, topk: int | None = None):
    from transformers import LlamaConfig, MixtralConfig

    from bar.tokenizer import stop_ids

    moe = {}
    if num_experts:
        moe = dict(num_local_experts=num_experts, num_experts_per_tok=topk or num_experts,
                   router_jitter_noise=0.0, output_router_logits=False)
    cls = MixtralConfig if num_experts else LlamaConfig
    config = cls(
        vocab_size=len(tok), hidden_size=arch.hidden_size, intermediate_size=arch.ffn_hidden_size,
        num_hidden_layers=arch.num_layers, num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_query_groups, head_dim=arch.head_dim,
        max_position_embeddings=arch.seq_length, rms_norm_eps=arch.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": arch.rope_base},
        attention_bias=False, mlp_bias=False, tie_word_embeddings=False, hidden_act="silu",
        pad_token_id=tok.pad_token_id, eos_token_id=sorted(stop_ids(tok)), bos_token_id=None,
        torch_dtype="float32", **moe,
    )
    config.architectures = ["MixtralForCausalLM" if num_experts else "LlamaForCausalLM"]
    return config


def export(state: dict[str, torch.Tensor], arch: ModelSpec, tok, out: Path,
           num_experts: int | None = None, topk: int | None = None) -> None:
    """Write a directory `AutoModelForCausalLM.from_pretrained(out)` loads offline."""
    from safetensors.torch import save_file
    from transformers import GenerationConfig

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = hf_config(arch, tok, num_experts, topk)
    config.save_pretrained(out)
    GenerationConfig(eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id,
                     do_sample=False).save_pretrained(out)
    save_file(to_hf(state, arch, len(tok), num_experts), out / "model.safetensors",
              metadata={"format": "pt"})
    tok.save_pretrained(out)
    (out / "bar.json").write_text(json.dumps({"source": "bar", "arch": arch.model_dump()}, indent=1))
