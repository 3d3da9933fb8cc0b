"""What the benchmark scripts share: the model of a preset, a `transformers` model of the same
shape, and a timer."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def model_spec(preset: str):
    """The model of `preset` (specs/model.yaml with the preset's model section over it)."""
    import yaml

    from bar.specs import Specs

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "specs").symlink_to(ROOT / "specs")
        (Path(tmp) / "params.yaml").write_text(yaml.safe_dump({"preset": preset, "seed": 0, "experts": []}))
        return Specs(tmp).model


def llama(arch):
    """A randomly initialised `transformers` Llama of the same shape as `arch` (SDPA attention)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=arch.vocab_size,
        hidden_size=arch.hidden_size,
        intermediate_size=arch.ffn_hidden_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_attention_heads,
        num_key_value_heads=arch.num_query_groups,
        head_dim=arch.head_dim,
        max_position_embeddings=arch.seq_length + 64,
        rms_norm_eps=arch.norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": arch.rope_base},
        attention_bias=False,
        mlp_bias=False,
        tie_word_embeddings=False,
        pad_token_id=0,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config)


def seconds(fn) -> float:
    """Wall seconds of `fn()`, waiting for the GPU's queued work when there is a GPU."""
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start
