"""Export to the `transformers` classes of the model's family (`EXPORTS`): Llama, Mistral, OLMo 2,
Olmo 3 or Qwen3 for dense models, Mixtral, FlexOlmo, bar's Olmo 3 MoE or Qwen3-MoE for MoE models;
and import a user's dense model of a family (`from_hf`, the inverse of `to_hf`).

The three MoE classes route like our Megatron-Core MoE when their config says so
(`norm_topk_prob`; Mixtral always does): softmax over the router logits, top-k, and the kept
weights renormalised, which equals a softmax over the top-k logits (Megatron's default). Their
router computes its logits in the model's precision, Megatron-Core's in float32: bf16 exports
route as bf16 inference would.

Works on full tensors with Megatron-Core names (`bar.train.checkpoint.full_state`), so it
needs neither a process group nor Megatron itself. Verified by comparing logits with the
Megatron model (tests/model/test_hf.py), not by names.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import torch

from bar.specs import LLAMA3_ROPE, ModelSpec


def split_qkv(qkv: torch.Tensor, arch: ModelSpec) -> tuple[torch.Tensor, ...]:
    """Megatron's fused QKV is grouped per key/value head: [q_1..q_n, k, v] for each group."""
    groups = arch.num_query_groups
    per_group = arch.num_attention_heads // groups
    w = qkv.view(groups, per_group + 2, arch.head_dim, arch.hidden_size)
    q = w[:, :per_group].reshape(-1, arch.hidden_size)
    k = w[:, per_group].reshape(-1, arch.hidden_size)
    v = w[:, per_group + 1].reshape(-1, arch.hidden_size)
    return q, k, v


# Each layer's norms: Megatron-Core name -> transformers name, per `ModelSpec.family`.
LAYER_NORMS = {
    "llama": {"input_layernorm": "input_layernorm", "pre_mlp_layernorm": "post_attention_layernorm"},
    "olmo2": {
        "self_attention.q_layernorm": "self_attn.q_norm",
        "self_attention.k_layernorm": "self_attn.k_norm",
        "post_self_attn_layernorm": "post_attention_layernorm",
        "post_mlp_layernorm": "post_feedforward_layernorm",
    },
    "qwen3": {
        "input_layernorm": "input_layernorm",
        "self_attention.q_layernorm": "self_attn.q_norm",
        "self_attention.k_layernorm": "self_attn.k_norm",
        "pre_mlp_layernorm": "post_attention_layernorm",
    },
}


def to_hf(
    state: Mapping[str, torch.Tensor], arch: ModelSpec, vocab: int, num_experts: int | None = None
) -> dict[str, torch.Tensor]:
    """Megatron GPT tensors -> the family's `transformers` tensors (`hf_export_tensors`)."""
    return dict(hf_export_tensors(state, arch, vocab, num_experts))


def hf_export_tensors(
    state: Mapping[str, torch.Tensor], arch: ModelSpec, vocab: int, num_experts: int | None = None
) -> Iterator[tuple[str, torch.Tensor]]:
    """Megatron GPT tensors -> the family's `transformers` tensors (dense or MoE: the three MoE
    classes name theirs alike), one at a time, vocabulary padding sliced off."""
    yield "model.embed_tokens.weight", state["embedding.word_embeddings.weight"][:vocab].contiguous()
    yield "model.norm.weight", state["decoder.final_layernorm.weight"]
    yield "lm_head.weight", state["output_layer.weight"][:vocab].contiguous()
    for i in range(arch.num_layers):
        src, dst = f"decoder.layers.{i}.", f"model.layers.{i}."
        q, k, v = split_qkv(state[src + "self_attention.linear_qkv.weight"], arch)
        yield dst + "self_attn.q_proj.weight", q.contiguous()
        yield dst + "self_attn.k_proj.weight", k.contiguous()
        yield dst + "self_attn.v_proj.weight", v.contiguous()
        yield dst + "self_attn.o_proj.weight", state[src + "self_attention.linear_proj.weight"]
        for ours, hf in LAYER_NORMS[arch.family].items():
            yield f"{dst}{hf}.weight", state[f"{src}{ours}.weight"]
        if num_experts:
            experts = [src + f"mlp.experts.local_experts.{e}." for e in range(num_experts)]
            yield dst + "mlp.gate.weight", state[src + "mlp.router.weight"]
            # Megatron's fc1 is [gate; up], as Mixtral's fused gate_up_proj.
            yield dst + "mlp.experts.gate_up_proj", torch.stack([state[e + "linear_fc1.weight"] for e in experts])
            yield dst + "mlp.experts.down_proj", torch.stack([state[e + "linear_fc2.weight"] for e in experts])
        else:
            gate, up = state[src + "mlp.linear_fc1.weight"].chunk(2, dim=0)
            yield dst + "mlp.gate_proj.weight", gate.contiguous()
            yield dst + "mlp.up_proj.weight", up.contiguous()
            yield dst + "mlp.down_proj.weight", state[src + "mlp.linear_fc2.weight"]


def join_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, arch: ModelSpec) -> torch.Tensor:
    """The inverse of `split_qkv`."""
    groups = arch.num_query_groups
    per_group = arch.num_attention_heads // groups
    q = q.reshape(groups, per_group, arch.head_dim, arch.hidden_size)
    k, v = (w.reshape(groups, 1, arch.head_dim, arch.hidden_size) for w in (k, v))
    return torch.cat([q, k, v], dim=1).reshape(-1, arch.hidden_size)


def from_hf(state: Mapping[str, torch.Tensor], arch: ModelSpec) -> dict[str, torch.Tensor]:
    """Dense tensors of the family's `transformers` class -> Megatron GPT tensors (`hf_tensors`)."""
    return dict(hf_tensors(state, arch))


def hf_tensors(state: Mapping[str, torch.Tensor], arch: ModelSpec) -> Iterator[tuple[str, torch.Tensor]]:
    """Dense tensors of the family's `transformers` class -> Megatron GPT tensors (in
    `arch.precision`), one at a time, reading only the ones each needs (with `read_hf`, an import
    holds about one layer besides the model); the vocabulary zero-padded to `arch.vocab_size` rows.
    Tied embeddings: the LM head starts as a copy of them."""

    def rows(w: torch.Tensor) -> torch.Tensor:
        out = w.new_zeros(arch.vocab_size, w.shape[1], dtype=arch.dtype)
        out[: len(w)] = w
        return out

    yield "embedding.word_embeddings.weight", rows(state["model.embed_tokens.weight"])
    yield "decoder.final_layernorm.weight", state["model.norm.weight"].to(arch.dtype)
    head = "lm_head.weight" if "lm_head.weight" in state else "model.embed_tokens.weight"
    yield "output_layer.weight", rows(state[head])
    for i in range(arch.num_layers):
        src, dst = f"model.layers.{i}.", f"decoder.layers.{i}."
        attn, mlp = src + "self_attn.", src + "mlp."
        qkv = [state[attn + f"{x}_proj.weight"] for x in "qkv"]
        yield dst + "self_attention.linear_qkv.weight", join_qkv(*qkv, arch).to(arch.dtype)
        yield dst + "self_attention.linear_proj.weight", state[attn + "o_proj.weight"].to(arch.dtype)
        fc1 = torch.cat([state[mlp + "gate_proj.weight"], state[mlp + "up_proj.weight"]])
        yield dst + "mlp.linear_fc1.weight", fc1.to(arch.dtype)
        yield dst + "mlp.linear_fc2.weight", state[mlp + "down_proj.weight"].to(arch.dtype)
        for ours, hf in LAYER_NORMS[arch.family].items():
            yield f"{dst}{ours}.weight", state[f"{src}{hf}.weight"].to(arch.dtype)


class SafetensorsFolder(Mapping):
    """The tensors of a saved `transformers` model (one or several *.safetensors files), each read
    from its file when asked for: nothing is held, and each file is mapped only while one is read."""

    def __init__(self, folder: Path):
        from safetensors import safe_open

        self.files = {}
        for f in sorted(Path(folder).glob("*.safetensors")):
            with safe_open(f, framework="pt") as handle:
                self.files |= dict.fromkeys(handle.keys(), f)

    def __getitem__(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(self.files[name], framework="pt") as handle:
            return handle.get_tensor(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)


def read_hf(folder: Path) -> SafetensorsFolder:
    """Every tensor of a saved `transformers` model, read when asked for (`SafetensorsFolder`)."""
    return SafetensorsFolder(folder)


def rope_parameters(arch: ModelSpec) -> dict:
    if arch.rope_scaling_factor is None:
        return {"rope_type": "default", "rope_theta": arch.rope_base}
    return {"rope_type": "llama3", "rope_theta": arch.rope_base, "factor": arch.rope_scaling_factor, **LLAMA3_ROPE}


# Each family's `transformers` model types (`exported_as`): dense, MoE with experts chosen per
# token; and bar's class (modeling_bar.py) over that MoE for experts chosen per sequence. Olmo 3
# has no MoE class in transformers: its MoE is bar's class, per token too (trust_remote_code).
EXPORTS = {
    "llama": ("llama", "mixtral", "BarMoeForCausalLM"),
    "mistral": ("mistral", "mixtral", "BarMoeForCausalLM"),
    "olmo2": ("olmo2", "flex_olmo", "BarFlexOlmoForCausalLM"),
    "olmo3": ("olmo3", None, "BarOlmo3MoeForCausalLM"),
    "qwen3": ("qwen3", "qwen3_moe", "BarQwen3MoeForCausalLM"),
}


def exported_as(arch: ModelSpec) -> str:
    """The `EXPORTS` entry of `arch`: its family, as Mistral or Olmo 3 when it has sliding windows."""
    if arch.sliding_window is None:
        return arch.family
    return {"llama": "mistral", "olmo2": "olmo3"}[arch.family]


def _windows(arch: ModelSpec, model_type: str) -> dict:
    if arch.sliding_window is None:
        return {}
    if model_type == "olmo3":
        kinds = ["full_attention" if arch.window(i) is None else "sliding_attention" for i in range(arch.num_layers)]
        return {"sliding_window": arch.sliding_window, "layer_types": kinds}
    return {"sliding_window": arch.sliding_window}


def hf_config(
    arch: ModelSpec, tok, num_experts: int | None = None, topk: int | None = None, sequence_topk: int | None = None
):
    from transformers import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from bar.tokenizer import stop_ids

    dense, moe_type, per_sequence = EXPORTS[exported_as(arch)]
    model_type, moe = (moe_type or dense, dict(num_experts_per_tok=topk or num_experts)) if num_experts else (dense, {})
    # Every family's router: softmax over the logits, top-k, the kept weights renormalised.
    moe |= {
        "mixtral": dict(num_local_experts=num_experts, router_jitter_noise=0.0, output_router_logits=False),
        "flex_olmo": dict(num_experts=num_experts, norm_topk_prob=True, output_router_logits=False),
        # bar's Olmo 3 MoE: FlexOlmo's MoE block, which reads both names of the expert count.
        "olmo3": dict(num_experts=num_experts, num_local_experts=num_experts, norm_topk_prob=True)
        if num_experts
        else {},
        "qwen3_moe": dict(
            num_experts=num_experts,
            norm_topk_prob=True,
            output_router_logits=False,
            moe_intermediate_size=arch.ffn_hidden_size,
            decoder_sparse_step=1,
            mlp_only_layers=[],
        ),
    }.get(model_type, {})
    config = CONFIG_MAPPING[model_type](
        vocab_size=len(tok),
        hidden_size=arch.hidden_size,
        intermediate_size=arch.ffn_hidden_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_query_groups,
        head_dim=arch.head_dim,
        max_position_embeddings=arch.seq_length,
        rms_norm_eps=arch.norm_eps,
        rope_parameters=(
            {kind: rope_parameters(arch) for kind in ("full_attention", "sliding_attention")}
            if model_type == "olmo3"
            else rope_parameters(arch)
        ),
        **_windows(arch, model_type),
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=False,
        hidden_act="silu",
        pad_token_id=tok.pad_token_id,
        eos_token_id=sorted(stop_ids(tok)),
        bos_token_id=None,
        dtype=str(arch.dtype).removeprefix("torch."),
        **moe,
    )
    config.architectures = [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type]]
    if num_experts and (sequence_topk or moe_type is None):  # bar's class (modeling_bar.py)
        if sequence_topk:  # experts chosen per sequence
            config.sequence_topk = sequence_topk
        config.architectures = [per_sequence]
        config.auto_map = {"AutoModelForCausalLM": f"modeling_bar.{per_sequence}"}
    return config


def save_weights(
    tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
    out: Path,
    max_shard_size: int | str = "5GB",
) -> None:
    """Weights as `save_pretrained` writes them: `model.safetensors`, or shards of at most
    `max_shard_size` (`model-00001-of-00003.safetensors`, ...) with `model.safetensors.index.json`.
    Tensors (a mapping, or (name, tensor) pairs as they come) are written a shard at a time: an
    export holds one shard besides what it reads from."""
    from safetensors.torch import save_file

    limit = _bytes(max_shard_size)
    shards: list[list[str]] = []
    shard: dict[str, torch.Tensor] = {}
    size = total = 0

    def flush() -> None:
        save_file(shard, out / f".shard-{len(shards)}.tmp", metadata={"format": "pt"})
        shards.append(list(shard))
        shard.clear()

    for name, t in tensors.items() if isinstance(tensors, Mapping) else tensors:
        n = t.numel() * t.element_size()
        if shard and size + n > limit:
            flush()
            size = 0
        shard[name] = t.contiguous()
        size, total = size + n, total + n
    flush()
    names = (
        ["model.safetensors"]
        if len(shards) == 1
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    for i, name in enumerate(names):
        (out / f".shard-{i}.tmp").replace(out / name)
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": total},
            "weight_map": {t: name for name, shard_names in zip(names, shards) for t in shard_names},
        }
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2, sort_keys=True))


def _bytes(size: int | str) -> int:
    """`save_pretrained`'s sizes: bytes, or a number with KB, MB, GB or TB (powers of 1000)."""
    if isinstance(size, int):
        return size
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
    return int(float(size[:-2]) * units[size[-2:].upper()])


def export(
    state: dict[str, torch.Tensor],
    arch: ModelSpec,
    tok,
    out: Path,
    num_experts: int | None = None,
    topk: int | None = None,
    sequence_topk: int | None = None,
    max_shard_size: int | str = "5GB",
) -> None:
    """Write a directory `AutoModelForCausalLM.from_pretrained(out)` loads offline (with
    `trust_remote_code=True` for an MoE that chooses its experts per sequence, and for an Olmo 3
    MoE: modeling_bar.py), its weights in the spec's precision (`config.json: dtype`), sharded
    beyond `max_shard_size`."""
    from transformers import GenerationConfig

    from bar.tokenizer import keep_in_decode, stop_tokens

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    config = hf_config(arch, tok, num_experts, topk, sequence_topk)
    config.save_pretrained(out)
    if getattr(config, "auto_map", None):
        shutil.copyfile(Path(__file__).with_name("modeling_bar.py"), out / "modeling_bar.py")
    GenerationConfig(
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id, do_sample=False
    ).save_pretrained(out)
    tensors = hf_export_tensors(state, arch, len(tok), num_experts)
    save_weights(((k, v.to(arch.dtype)) for k, v in tensors), out, max_shard_size)
    tok.save_pretrained(out)
    keep_in_decode(out, stop_tokens(tok))
    # Generation continues each row from its last token: a batch of prompts pads on the left.
    config_path = out / "tokenizer_config.json"
    config_path.write_text(json.dumps({**json.loads(config_path.read_text()), "padding_side": "left"}, indent=2))
    (out / "bar.json").write_text(json.dumps({"source": "bar", "arch": arch.model_dump()}, indent=1))
