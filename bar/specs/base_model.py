"""A user's base model (`specs/model.yaml: base`): the architecture its transformers config fixes.

Reads config.json and the tokenizer's files only (json: no torch, no transformers import).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bar.specs.errors import InputError

# Llama 3.x's RoPE scaling as Megatron-Core applies it (only `factor` varies).
LLAMA3_ROPE = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
# The `ModelSpec.family` of each model_type bar imports.
FAMILIES = {"llama": "llama", "mistral": "llama", "olmo2": "olmo2", "olmo3": "olmo2", "qwen3": "qwen3"}
# Who may have sliding-window layers: Mistral's slide all, Olmo 3's as its layer_types say.
# (Qwen3's, with use_sliding_window, slide from max_window_layers on: not built.)
SLIDING = ("mistral", "olmo3")


def base_architecture(folder: Path) -> dict[str, Any]:
    """The `ModelSpec` keys a local `transformers` model directory fixes (json only: no torch).

    `vocab_size` (embedding rows) makes room for bar's special tokens the tokenizer lacks
    (`bar.tokenizer.missing_specials`), rounded up to a multiple of 64."""
    from bar.tokenizer import missing_specials, saved_tokens

    if not folder.is_dir():
        raise InputError(f"no such folder {folder}")
    needed = ["config.json", "tokenizer.json"]
    if missing := [f for f in needed if not (folder / f).is_file()]:
        raise InputError(
            f"{folder} lacks {', '.join(missing)}: save the model and its fast tokenizer there "
            f"with `model.save_pretrained(dir)` and `tokenizer.save_pretrained(dir)`"
        )
    if not any(folder.glob("*.safetensors")):
        raise InputError(
            f"{folder} has no *.safetensors weights: save them with `model.save_pretrained(dir)` "
            f"(safetensors is its default)"
        )
    config = json.loads((folder / "config.json").read_text())
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if isinstance(rope.get("full_attention"), dict):  # Olmo 3: RoPE per layer type (what it reads), the same for both
        if rope["full_attention"] != rope.get("sliding_attention", rope["full_attention"]):
            raise InputError(
                f"{folder / 'config.json'}: rope_parameters differ between full_attention and sliding_attention "
                f"layers ({json.dumps(rope)}): bar builds one RoPE for every layer"
            )
        rope = rope["full_attention"]
    # What each key may be. Mistral is a Llama with a sliding window, Olmo 3 an OLMo 2 with sliding
    # layers. Qwen3's sliding window applies only with use_sliding_window (as its transformers config reads it).
    window = config.get("sliding_window") if config.get("use_sliding_window", True) else None
    model_type = config.get("model_type")
    olmo3 = model_type == "olmo3"
    kinds = sorted(set(config.get("layer_types") or ["full_attention"]))
    problems = {
        "model_type": (model_type, list(FAMILIES)),
        "layer types": (kinds, [["full_attention"], *([["full_attention", "sliding_attention"]] if olmo3 else [])]),
        "hidden_act": (config.get("hidden_act", "silu"), ["silu"]),
        "attention_bias": (config.get("attention_bias", False), [False]),
        "mlp_bias": (config.get("mlp_bias", False), [False]),
    }
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type == "llama3":  # the scaling Megatron-Core implements, with these constants fixed
        problems |= {f"rope {k}": (rope.get(k), [v]) for k, v in LLAMA3_ROPE.items()}
    else:
        problems["rope type"] = (rope_type, ["default", "llama3"])
    if model_type not in SLIDING:
        problems["sliding_window"] = (window, [None])
    for key, (value, allowed) in problems.items():
        if value not in allowed:
            raise InputError(
                f"{folder / 'config.json'}: {key} = {json.dumps(value)}: bar imports Llama, Mistral, OLMo 2, Olmo 3 "
                f"and Qwen3 models (RMSNorm, SwiGLU, RoPE or Llama 3's scaled RoPE, full or Mistral's and Olmo 3's "
                f"sliding-window attention, no biases): {key} "
                f"must be {' or '.join(json.dumps(a) for a in allowed)}"
            )
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    tokens, size = saved_tokens(folder)
    rows = max(config["vocab_size"], size + len(missing_specials(tokens)))
    return {
        "family": FAMILIES[model_type],
        "num_layers": config["num_hidden_layers"],
        "hidden_size": config["hidden_size"],
        "num_attention_heads": heads,
        "num_query_groups": config.get("num_key_value_heads") or heads,
        "kv_channels": None if head_dim * heads == config["hidden_size"] else head_dim,
        "ffn_hidden_size": config["intermediate_size"],
        "vocab_size": -(-rows // 64) * 64,
        "rope_base": float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
        "rope_scaling_factor": float(rope["factor"]) if rope_type == "llama3" else None,
        "norm_eps": float(config.get("rms_norm_eps", 1e-6)),
        "sliding_window": window if model_type in SLIDING else None,
        "layer_types": config.get("layer_types") if olmo3 and window else None,
    }


def check_anchor(root: Path, anchor: str, base: str, arch: dict[str, Any]) -> None:
    """A user's anchor (a folder under `root`) is a post-trained copy of the base (`arch`, its
    `base_architecture`): the same architecture, embedding rows and tokenizer."""
    from bar.tokenizer import saved_vocab

    theirs = base_architecture(root / anchor)
    rows = [json.loads((root / f / "config.json").read_text())["vocab_size"] for f in (anchor, base)]
    for key, (mine, its) in {
        "config.json vocab_size": tuple(rows),
        **{k: (theirs[k], v) for k, v in arch.items()},
    }.items():
        if mine != its:
            raise InputError(
                f"its {key} is {json.dumps(mine)} and the base's ({base}) {json.dumps(its)}: an anchor is the "
                f"base post-trained, with the same architecture and tokenizer"
            )
    mine, its = saved_vocab(root / anchor), saved_vocab(root / base)
    if mine != its:
        token = min(
            (t for t in mine.keys() | its.keys() if mine.get(t) != its.get(t)), key=lambda t: (its.get(t, 1 << 62), t)
        )
        raise InputError(
            f"its tokenizer differs from the base's ({base}): token {token!r} is id {mine.get(token)} in the "
            f"anchor's and {its.get(token)} in the base's; an anchor keeps the base's tokenizer"
        )
