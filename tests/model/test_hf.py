"""Exports load in `transformers` as the family's classes and give bar's logits and tokens; they
carry the spec's precision, and big ones are sharded as `save_pretrained` shards."""

import json

import pytest
import torch

from conftest import hf_greedy, small_arch

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


# Sliding windows of 6 tokens: the 12-token inputs and the decoded sequences (up to 21) outgrow them.
FAMILIES = {
    "llama": {},
    "mistral": {"sliding_window": 6},
    "olmo2": {"family": "olmo2"},
    "olmo3": {"family": "olmo2", "sliding_window": 6, "layer_types": ["sliding_attention", "full_attention"]},
    "qwen3": {"family": "qwen3", "kv_channels": 12},
}
CLASSES = {
    ("llama", None): "LlamaForCausalLM",
    ("llama", 3): "MixtralForCausalLM",
    ("mistral", None): "MistralForCausalLM",
    ("mistral", 3): "MixtralForCausalLM",
    ("olmo2", None): "Olmo2ForCausalLM",
    ("olmo2", 3): "FlexOlmoForCausalLM",
    ("olmo3", None): "Olmo3ForCausalLM",
    ("olmo3", 3): "BarOlmo3MoeForCausalLM",  # transformers has no Olmo 3 MoE: bar's (trust_remote_code)
    ("qwen3", None): "Qwen3ForCausalLM",
    ("qwen3", 3): "Qwen3MoeForCausalLM",
}


@pytest.mark.parametrize("num_experts", [None, 3], ids=["dense", "moe"])
@pytest.mark.parametrize("family", list(FAMILIES))
def test_an_export_loads_as_its_familys_class_and_gives_bars_logits_and_tokens(tmp_path, megatron, family, num_experts):
    """Experts chosen per token, 2 of 3: the family's router renormalises the kept weights as Megatron-Core does."""
    from transformers import AutoModelForCausalLM

    from bar.decode import generate
    from bar.model import build
    from bar.model.hf import export
    from bar.tokenizer import stop_ids
    from bar.tokenizer import train as train_tokenizer
    from bar.train.checkpoint import full_state

    arch = small_arch(init_std=0.5, **FAMILIES[family])  # logits far enough apart that a wrong mapping shows
    topk = 2 if num_experts else None
    torch.manual_seed(0)
    model = build(arch, 1, num_experts=num_experts, topk=topk).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # norms other than ones: a norm mapped to the wrong place shows
                p.uniform_(0.5, 1.5)
            if "router" in name:  # routing far from uniform
                p.normal_(0, 1.0)
    tok = train_tokenizer(["hello world 123"] * 20, 300, 1, 2)
    export(full_state(model), arch, tok, tmp_path, num_experts=num_experts, topk=topk)
    remote = CLASSES[family, num_experts].startswith("Bar")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=remote).eval()
    assert type(hf).__name__ == CLASSES[family, num_experts]

    x = torch.randint(0, len(tok), (2, 12), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = hf(x).logits
        diff = (model(x, None, None)[..., : len(tok)] - theirs).abs().max().item()
    print(
        f"{family} {CLASSES[family, num_experts]} export: max |logit diff| = {diff:.2e}, logit std {theirs.std():.2f}"
    )
    assert theirs.std() > 0.5 and diff < 1e-4

    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(1, len(tok), (n,), generator=g).tolist() for n in (4, 7, 11)]
    kw = dict(max_new_tokens=10, stop_ids=stop_ids(tok), vocab_size=len(tok), pad_id=tok.pad_token_id)
    for prompt, new in zip(prompts, generate(model, prompts, **kw)):
        assert hf_greedy(hf, tok, prompt, 10) == new
