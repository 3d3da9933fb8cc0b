"""Branching into a 2-slot MoE, trainable groups, and the Mixtral export."""

import pytest
import torch

from bar.model.moe import anchor_ffn, group_of, upcycle
from bar.specs import ModelSpec

ARCH = ModelSpec(num_layers=2, hidden_size=32, num_attention_heads=4, num_query_groups=2,
                 ffn_hidden_size=48, vocab_size=320, seq_length=32)


@pytest.fixture(scope="module")
def dense_states(megatron):
    """Full state dicts of two different random dense models (an 'anchor' and a 'base')."""
    from bar.model import build
    from bar.train.checkpoint import full_state

    torch.manual_seed(1)
    anchor = full_state(build(ARCH, 1))
    torch.manual_seed(2)
    return anchor, full_state(build(ARCH, 1))


def test_upcycle_slots_and_groups(dense_states):
    anchor, base = dense_states
    moe = upcycle(anchor, base, ARCH.num_layers)
    for layer in range(ARCH.num_layers):
        dense = f"decoder.layers.{layer}.mlp.linear_fc1.weight"
        assert torch.equal(moe[f"decoder.layers.{layer}.mlp.experts.local_experts.0.linear_fc1.weight"], anchor[dense])
        assert torch.equal(moe[f"decoder.layers.{layer}.mlp.experts.local_experts.1.linear_fc1.weight"], base[dense])
        assert torch.equal(moe[f"decoder.layers.{layer}.mlp.router.weight"], torch.zeros(2, 32))
    assert torch.equal(moe["embedding.word_embeddings.weight"], anchor["embedding.word_embeddings.weight"])
    assert anchor_ffn(moe).keys() == {k for k in anchor if ".mlp." in k}
    groups = {group_of(k) for k in moe}
    assert groups == {None, "domain_ffn", "router", "embeddings", "lm_head", "attention", "norms"}
    assert all(group_of(k) is None for k in moe if "local_experts.0." in k)


def test_moe_megatron_matches_mixtral_and_anchor_stays_frozen(tmp_path, dense_states, megatron):
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from bar.model import build
    from bar.model.hf import export
    from bar.model.moe import set_trainable
    from bar.tokenizer import train as train_tokenizer
    from bar.train.checkpoint import full_state, load_state

    anchor, base = dense_states
    model = build(ARCH, 1, num_experts=2)
    state = upcycle(anchor, base, ARCH.num_layers)
    state["decoder.layers.0.mlp.router.weight"][1] = torch.randn(32)  # routing that matters
    load_state(model, state)
    names = set_trainable(model, ["domain_ffn", "router", "attention"])
    assert not any("local_experts.0." in n for n in names)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    x = torch.randint(0, 260, (2, 16))
    for _ in range(3):
        model(x, None, None, labels=x).mean().backward()
        opt.step()
        opt.zero_grad()
    after = full_state(model)
    for k, v in anchor_ffn(after).items():
        assert torch.equal(v, anchor[k]), k
    router = after["decoder.layers.0.mlp.router.weight"]
    assert torch.equal(router[0], state["decoder.layers.0.mlp.router.weight"][0])  # anchor row fixed
    assert not torch.equal(router[1], state["decoder.layers.0.mlp.router.weight"][1])

    tok = train_tokenizer(["hello world 123"] * 20, 300, 1, 2)
    export(after, ARCH, tok, tmp_path / "hf", num_experts=2)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(hf).__name__ == "MixtralForCausalLM"
    model.eval()
    with torch.no_grad():
        ours = model(x, None, None, runtime_gather_output=True)[..., : len(tok)]
        theirs = hf(x).logits
    assert (ours - theirs).abs().max() < 1e-4


def test_lr_scale_sets_each_groups_step(dense_states, megatron):
    """A group's learning rate is the schedule's times its `lr_scale`: on Adam's first step every
    trained weight moves by about its learning rate, so scaled groups move proportionally less."""
    from bar.model import build
    from bar.model.moe import set_trainable
    from bar.specs import OptimSpec
    from bar.train import optimizer, set_lr
    from bar.train.checkpoint import full_state, load_state

    anchor, base = dense_states
    model = build(ARCH, 1, num_experts=2)
    load_state(model, upcycle(anchor, base, ARCH.num_layers))
    set_trainable(model, ["domain_ffn", "embeddings", "lm_head"])
    before = full_state(model)
    opt = optimizer(model, OptimSpec(lr=1e-3), {"embeddings": 0.1, "lm_head": 0.5})
    set_lr(opt, 1e-3)
    x = torch.randint(0, 260, (2, 16))
    model(x, None, None, labels=x).mean().backward()
    opt.step()
    after = full_state(model)

    def step(name):
        moved = (after[name] - before[name]).abs()
        return moved[moved > 0].median().item()

    assert step("decoder.layers.0.mlp.experts.local_experts.1.linear_fc1.weight") == pytest.approx(1e-3, rel=0.05)
    assert step("embedding.word_embeddings.weight") == pytest.approx(1e-4, rel=0.05)
    assert step("output_layer.weight") == pytest.approx(5e-4, rel=0.05)
    assert torch.equal(after["decoder.layers.0.self_attention.linear_qkv.weight"],
                       before["decoder.layers.0.self_attention.linear_qkv.weight"])


def test_added_tokens_get_the_mean_row_of_the_others(dense_states):
    from bar.model import init_added_tokens

    anchor, _ = dense_states
    out = init_added_tokens(anchor, [4, 5], vocab=300)
    for name in ("embedding.word_embeddings.weight", "output_layer.weight"):
        w, new = anchor[name], out[name]
        keep = [i for i in range(300) if i not in (4, 5)]
        assert torch.allclose(new[4], w[keep].mean(0)) and torch.equal(new[4], new[5])
        assert torch.equal(new[keep], w[keep]) and torch.equal(new[300:], w[300:])  # the rest untouched
        assert not torch.equal(w[4], w[5])  # they differed before
