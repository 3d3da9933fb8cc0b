"""Branching into a 2-slot MoE, trainable groups, and the Mixtral export."""

import pytest
import torch

from bar.model.moe import anchor_ffn, group_of, upcycle
from bar.train.checkpoint import Resumable
from conftest import hf_greedy, small_arch

ARCH = small_arch()


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
    assert groups == {"anchor_ffn", "domain_ffn", "router", "embeddings", "lm_head", "attention", "norms"}
    assert all((group_of(k) == "anchor_ffn") == ("local_experts.0." in k) for k in moe)


def test_moe_megatron_matches_mixtral_and_anchor_stays_frozen(tmp_path, dense_states, megatron):
    from transformers import AutoModelForCausalLM

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
    # Listed (the ablation that trains it), the anchor FFN trains like any group.
    assert {n for n in set_trainable(model, ["anchor_ffn"])} == {f"{k}" for k in after if "local_experts.0." in k}
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
    assert torch.equal(
        after["decoder.layers.0.self_attention.linear_qkv.weight"],
        before["decoder.layers.0.self_attention.linear_qkv.weight"],
    )


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


OLMO3 = {"family": "olmo2", "sliding_window": 6, "layer_types": ["sliding_attention", "full_attention"]}


@pytest.mark.parametrize(
    "family,cls",
    [
        ({"family": "llama"}, "BarMoeForCausalLM"),
        ({"family": "olmo2"}, "BarFlexOlmoForCausalLM"),
        (OLMO3, "BarOlmo3MoeForCausalLM"),
        ({"family": "qwen3"}, "BarQwen3MoeForCausalLM"),
    ],
    ids=["llama", "olmo2", "olmo3", "qwen3"],
)
def test_an_moe_choosing_experts_per_sequence_exports_with_bars_class(tmp_path, megatron, family, cls):
    """`sequence_topk`: the export carries modeling_bar.py; `transformers`' greedy generate, prompt
    by prompt, gives what bar.decode gives (and not what routing every expert per token gives); the
    exported tokenizer pads a batch on the left, so a batch generates what its prompts do alone."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bar.decode import expert_shares, generate
    from bar.model import build
    from bar.model.hf import export
    from bar.tokenizer import stop_ids
    from bar.tokenizer import train as train_tokenizer
    from bar.train.checkpoint import full_state

    arch = ARCH.model_copy(update={**family, "init_std": 0.5})  # outputs far apart: routing shows
    torch.manual_seed(0)
    model = build(arch, 1, num_experts=4).eval()
    with torch.no_grad():
        for layer in model.decoder.layers:
            layer.mlp.router.weight.normal_(0, 1.0)  # routing far from uniform
    tok = train_tokenizer(["hello world 123"] * 20, 300, 1, 2)
    export(full_state(model), arch, tok, tmp_path / "hf", num_experts=4, sequence_topk=1)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", trust_remote_code=True).eval()
    assert type(hf).__name__ == cls
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(1, len(tok), (n,), generator=g).tolist() for n in (4, 7, 11, 6, 9, 5)]
    kw = dict(max_new_tokens=10, stop_ids=stop_ids(tok), vocab_size=len(tok), pad_id=tok.pad_token_id)
    ours = generate(model, prompts, sequence_topk=1, **kw)
    assert ours != generate(model, prompts, **kw)
    for prompt, new in zip(prompts, ours):
        assert hf_greedy(hf, tok, prompt, 10) == new
    # The router shares each side ranks the experts by: the same, prompt by prompt.
    shares = expert_shares(model, prompts, pad_id=tok.pad_token_id)
    for prompt, row in zip(prompts, shares):
        torch.testing.assert_close(hf.shares(torch.tensor([prompt]))[0], row, rtol=0, atol=1e-5)
    assert torch.allclose(shares.sum(1), torch.ones(len(prompts))) and shares[:, 1:].argmax(1).unique().numel() > 1
    texts = ["hello", "hello world 123 hello world", "123 123", "world hello 123 hello"]
    exported = AutoTokenizer.from_pretrained(tmp_path / "hf")
    kw = dict(max_new_tokens=10, do_sample=False, eos_token_id=sorted(stop_ids(tok)), pad_token_id=tok.pad_token_id)
    alone = [hf.generate(**exported([t], return_tensors="pt"), **kw)[0].tolist() for t in texts]
    batch = exported(texts, return_tensors="pt", padding=True)
    together = hf.generate(**batch, **kw)[:, batch["input_ids"].shape[1] :].tolist()
    stops = stop_ids(tok) | {tok.pad_token_id}
    for one, prompt, row in zip(alone, texts, together):
        new = one[len(exported(prompt)["input_ids"]) :]
        assert [t for t in row if t not in stops] == [t for t in new if t not in stops]


@pytest.fixture(scope="module")
def three_slots(megatron):
    """The weights of a random 3-slot MoE (anchor + two experts, as merged)."""
    from bar.model import build
    from bar.train.checkpoint import full_state

    torch.manual_seed(3)
    return full_state(build(ARCH, 1, num_experts=3))


def router_gradients(state, tmp_path, topk=None, z_loss=0.0, load_balancing=0.0) -> dict[str, torch.Tensor]:
    """The router weights' gradients of one step of bar's training loop (`bar.train.train`: the
    loss it backprops, with whatever Megatron-Core's router adds) on `state` with only the
    router training, as fit_router does; the same batch every time."""
    from bar.model import build
    from bar.model.moe import set_trainable
    from bar.specs import TrainSpec
    from bar.train import train
    from bar.train.batches import Batches
    from bar.train.checkpoint import load_state

    model = build(ARCH, 1, num_experts=3, topk=topk, z_loss=z_loss, load_balancing=load_balancing)
    load_state(model, state)
    set_trainable(model, ["router"], freeze_anchor_row=False)
    g = torch.Generator().manual_seed(0)
    items = [(torch.randint(1, 320, (20,), generator=g).tolist(), [True] * 20) for _ in range(16)]
    spec = TrainSpec(steps=1, batch_size=4, checkpoint_every=50, optim={"lr": 1e-3, "grad_clip": 0})
    train(
        model,
        Batches(items, batch_size=4, seq_length=32, pad_id=0, seed=0),
        spec,
        Resumable(tmp_path, "fp"),
        desc="router",
    )
    return {name: p.grad.clone() for name, p in model.named_parameters() if name.endswith(".mlp.router.weight")}


@pytest.mark.parametrize("coefficient,value,topk", [("z_loss", 1e-3, None), ("load_balancing", 1e-2, 2)])
def test_each_router_loss_coefficient_changes_the_routers_gradient(three_slots, tmp_path, coefficient, value, topk):
    """router.yaml's z_loss (the default 1e-3, every expert active) and load_balancing (top 2 of 3)
    reach the gradient bar's training step gives the router; at 0 the gradient is the LM loss's alone."""
    without = router_gradients(three_slots, tmp_path / "0", topk)
    again = router_gradients(three_slots, tmp_path / "0 again", topk)
    coefficient_on = router_gradients(three_slots, tmp_path / "on", topk, **{coefficient: value})
    assert len(without) == ARCH.num_layers
    for name, grad in without.items():
        assert grad.norm() > 0 and torch.equal(grad, again[name]), name
        assert (coefficient_on[name] - grad).norm() > 0.1 * grad.norm(), name
