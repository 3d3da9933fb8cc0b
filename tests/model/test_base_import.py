"""A user's Llama model imported as the pipeline's base: `bar.model.hf.from_hf`, the inverse of `to_hf`."""

import pytest
import torch

from conftest import make_llama

# Llama 3.x's scaled RoPE (Llama 3.2's factor): with head_dim 16 and theta 10000 the lowest
# frequencies have wavelengths past 8192 tokens, which the scaling divides by the factor.
LLAMA3 = {
    "rope_type": "llama3",
    "rope_theta": 10000.0,
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
}


@pytest.mark.parametrize(
    "tied,rope,family",
    [(False, None, "llama"), (True, None, "llama"), (False, LLAMA3, "llama"), (False, None, "mistral")],
    ids=["untied", "tied", "llama3", "mistral"],
)
def test_imported_llama_gives_the_logits_transformers_gives(tmp_path, megatron, tied, rope, family):
    from transformers import AutoModelForCausalLM

    from bar.model import build
    from bar.model.hf import from_hf, read_hf, rope_parameters, to_hf
    from bar.specs import ModelSpec, base_architecture
    from bar.train.checkpoint import load_state

    folder = make_llama(tmp_path / "base", tied=tied, rope=rope, family=family)
    arch = ModelSpec(seq_length=64, **base_architecture(folder))
    assert arch.family == "llama" and arch.rope_scaling_factor == (rope and rope["factor"])
    hf_state = read_hf(folder)
    state = from_hf(hf_state, arch)
    model = build(arch, 1)
    load_state(model, state)
    model.eval()
    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert hf.config.model_type == family
    vocab = hf.config.vocab_size
    assert arch.vocab_size > vocab  # rows for bar's special tokens, zero until pretrain_base sets them
    x = torch.randint(0, vocab, (3, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(x, None, None, runtime_gather_output=True)
        theirs = hf(x).logits
    diff = (ours[..., :vocab] - theirs).abs().max().item()
    print(
        f"imported {family} (tied={tied}, rope={rope and rope['rope_type']}): max |logit diff| = {diff:.2e}, logit std {theirs.std():.2f}"
    )
    assert theirs.std() > 0.5 and diff < 1e-4
    assert torch.equal(ours[..., vocab:], torch.zeros_like(ours[..., vocab:]))

    assert rope_parameters(arch) == hf.config.rope_parameters  # what bar's exports write
    back = to_hf(state, arch, vocab)  # the export maps it back tensor for tensor
    expected = hf_state | {"lm_head.weight": hf.lm_head.weight.detach()}
    assert back.keys() == expected.keys()
    assert all(torch.equal(back[k], expected[k]) for k in back)
