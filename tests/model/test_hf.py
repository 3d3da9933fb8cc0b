"""Exports carry the spec's precision, and big ones are sharded as `save_pretrained` shards."""

import json

import torch

from conftest import small_arch

BF16 = small_arch(precision="bf16")


def test_a_bf16_moe_exports_in_bf16_shards_with_an_index_that_transformers_loads(tmp_path, megatron):
    from transformers import AutoModelForCausalLM

    from bar.model import build
    from bar.model.hf import export
    from bar.tokenizer import train as train_tokenizer
    from bar.train.checkpoint import full_state

    torch.manual_seed(0)
    model = build(BF16, 1, num_experts=3).eval()
    tok = train_tokenizer(["hello world 123"] * 20, 300, 1, 2)
    export(full_state(model), BF16, tok, tmp_path, num_experts=3, max_shard_size="40KB")

    config = json.loads((tmp_path / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 2 and sorted(set(index["weight_map"].values())) == shards
    assert not (tmp_path / "model.safetensors").exists()

    hf = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(hf).__name__ == "MixtralForCausalLM" and hf.dtype == torch.bfloat16
    # The same bf16 weights computed in fp32 on both sides: the export's mapping, exactly.
    hf32 = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ours = build(BF16.model_copy(update={"precision": "fp32"}), 1, num_experts=3).eval()
    from bar.train.checkpoint import load_state

    load_state(ours, full_state(model))
    x = torch.randint(0, len(tok), (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = hf32(x).logits
        mine = ours(x, None, None)[..., : len(tok)]
    assert (theirs - mine).abs().max().item() < 1e-4
