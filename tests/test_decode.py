"""The KV-cache decoding path against recomputing the whole sequence at every step."""

import pytest
import torch

from conftest import small_arch

ARCH = small_arch(seq_length=64, init_std=0.5)  # large weights: attention far from uniform, so positions matter
# Each family's layer (norms, QK-norm), heads wider than hidden / heads, and Olmo 3's sliding
# window in every other layer (6 tokens: the decoded sequences outgrow it).
FAMILIES = {
    "llama": {},
    "olmo2": {"family": "olmo2"},
    "olmo3": {"family": "olmo2", "sliding_window": 6, "layer_types": ["sliding_attention", "full_attention"]},
    "qwen3": {"family": "qwen3", "kv_channels": 12},
}


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("path", ["plain", "megatron"])
def test_cached_decoding_matches_full_recompute_with_left_padding(megatron, monkeypatch, path, family):
    """Both decoders: the plain-PyTorch one (TP=1) and Megatron-Core's inference context (TP>1)."""
    from bar import parallel
    from bar.decode import generate
    from bar.model import build

    if path == "megatron":  # the decoder generate() takes under tensor parallelism
        monkeypatch.setattr(parallel, "tp_size", lambda: 2)

    torch.manual_seed(0)
    model = build(ARCH.model_copy(update=FAMILIES[family]), 1).eval()
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(1, 300, (n,), generator=g).tolist() for n in (5, 9, 12)]
    got = generate(model, prompts, max_new_tokens=16, stop_ids=set(), vocab_size=300, pad_id=0)

    for prompt, new in zip(prompts, got):
        seq = list(prompt)
        with torch.no_grad():
            for _ in range(16):  # one row alone, no cache, full causal attention
                logits = model(torch.tensor([seq]), None, None)[0, -1, :300]
                seq.append(int(logits.argmax()))
        assert new == seq[len(prompt) :]
    assert len({tuple(row) for row in got}) == 3  # the rows differ: the check is not vacuous


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("topk", [3, 2])
def test_cached_moe_decoding_matches_full_recompute(megatron, topk, family):
    """The MoE as Megatron-Core routes it: all experts (softmax over every logit) or the top k."""
    from bar.decode import generate
    from bar.model import build

    torch.manual_seed(0)
    model = build(ARCH.model_copy(update=FAMILIES[family]), 1, num_experts=3, topk=topk).eval()
    with torch.no_grad():
        for layer in model.decoder.layers:
            layer.mlp.router.weight.normal_(0, 1.0)  # routing far from uniform
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(1, 300, (n,), generator=g).tolist() for n in (4, 11)]
    got = generate(model, prompts, max_new_tokens=12, stop_ids=set(), vocab_size=300, pad_id=0)
    for prompt, new in zip(prompts, got):
        seq = list(prompt)
        with torch.no_grad():
            for _ in range(12):
                seq.append(int(model(torch.tensor([seq]), None, None)[0, -1, :300].argmax()))
        assert new == seq[len(prompt) :]


def test_sequence_topk_serves_each_sequence_with_the_anchor_and_the_expert_its_router_favours(megatron):
    """sequence_topk=1: each row decodes exactly as the 2-slot model of the anchor and the expert
    with the most router probability over its prompt (`bar.merge.with_only`), that choice taken
    here from Megatron-Core's own router on the prompt, alone."""
    from bar.decode import choose_experts, generate
    from bar.merge import with_only
    from bar.model import build
    from bar.train.checkpoint import full_state, load_state

    torch.manual_seed(0)
    model = build(ARCH, 1, num_experts=4).eval()
    with torch.no_grad():
        for layer in model.decoder.layers:
            layer.mlp.router.weight.normal_(0, 1.0)
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(1, 300, (n,), generator=g).tolist() for n in (4, 7, 11, 6, 9, 5)]
    kw = dict(max_new_tokens=10, stop_ids=set(), vocab_size=300, pad_id=0)
    got = generate(model, prompts, sequence_topk=1, **kw)
    per_token = generate(model, prompts, **kw)

    probs = []
    hooks = [
        layer.mlp.router.register_forward_hook(lambda m, args, out: probs.append(out[0].float()))
        for layer in model.decoder.layers
    ]
    chosen = []
    for prompt in prompts:
        probs.clear()
        with torch.no_grad():
            model(torch.tensor([prompt]), None, None)
        shares = torch.stack([p.reshape(-1, 4).mean(0) for p in probs]).mean(0)
        chosen.append(1 + int(shares[1:].argmax()))
    for h in hooks:
        h.remove()
    pair = build(ARCH, 1, num_experts=2).eval()
    state = full_state(model)
    for prompt, new, slot in zip(prompts, got, chosen):
        load_state(pair, with_only(state, slot))
        assert new == generate(pair, [prompt], **kw)[0]
    assert len(set(chosen)) > 1 and got != per_token  # neither the choice nor its effect is vacuous
    # What evaluate reports as each domain's choice: the same experts, the anchor always beside them.
    keep = choose_experts(model, prompts, sequence_topk=1, pad_id=0)
    assert keep[:, 0].all() and keep.sum(1).tolist() == [2] * len(prompts)
    assert keep[:, 1:].float().argmax(1).add(1).tolist() == chosen
