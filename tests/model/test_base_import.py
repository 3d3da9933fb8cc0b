"""A user's model (Llama, Mistral, OLMo 2, Olmo 3, Qwen3) imported as the pipeline's base: `bar.model.hf.from_hf`, the inverse of `to_hf`."""

import pytest
import torch

from conftest import make_base

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
    "tied,rope,model_type,family,head_dim,window",
    [
        (False, None, "llama", "llama", None, None),
        (True, None, "llama", "llama", None, None),
        (False, LLAMA3, "llama", "llama", None, None),
        (False, None, "mistral", "llama", None, None),
        (False, None, "mistral", "llama", None, 16),  # every layer slides: a query sees 16 of the 40 tokens
        (False, None, "olmo2", "olmo2", None, None),
        (False, None, "olmo3", "olmo2", None, 16),  # layer 0 slides, layer 1 attends to everything
        (True, None, "qwen3", "qwen3", 24, None),  # as Qwen3's small models: tied, heads wider than hidden / heads
    ],
    ids=["untied", "tied", "llama3", "mistral", "mistral-sliding", "olmo2", "olmo3", "qwen3"],
)
def test_an_imported_base_gives_the_logits_transformers_gives(
    tmp_path, megatron, tied, rope, model_type, family, head_dim, window
):
    from transformers import AutoModelForCausalLM

    from bar.model import build
    from bar.model.hf import from_hf, read_hf, rope_parameters, to_hf
    from bar.specs import ModelSpec, base_architecture
    from bar.train.checkpoint import load_state

    folder = make_base(tmp_path / "base", tied=tied, rope=rope, model_type=model_type, head_dim=head_dim, window=window)
    arch = ModelSpec(seq_length=64, **base_architecture(folder))
    assert arch.family == family and arch.rope_scaling_factor == (rope and rope["factor"])
    assert [arch.window(i) for i in range(2)] == {"mistral": [window] * 2, "olmo3": [window, None]}.get(
        model_type, [None, None]
    )
    assert arch.kv_channels == head_dim
    hf_state = read_hf(folder)
    state = from_hf(hf_state, arch)
    model = build(arch, 1)
    load_state(model, state)
    model.eval()
    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert hf.config.model_type == model_type
    vocab = hf.config.vocab_size
    assert arch.vocab_size > vocab  # rows for bar's special tokens, zero until pretrain_base sets them
    x = torch.randint(0, vocab, (3, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(x, None, None, runtime_gather_output=True)
        theirs = hf(x).logits
    diff = (ours[..., :vocab] - theirs).abs().max().item()
    print(
        f"imported {model_type} (tied={tied}, rope={rope and rope['rope_type']}): max |logit diff| = {diff:.2e}, logit std {theirs.std():.2f}"
    )
    assert theirs.std() > 0.5 and diff < 1e-4
    assert torch.equal(ours[..., vocab:], torch.zeros_like(ours[..., vocab:]))
    if window:  # the window binds: attending to every token gives other logits past it
        full = build(arch.model_copy(update={"sliding_window": None, "layer_types": None}), 1)
        load_state(full, state)
        with torch.no_grad():
            unwindowed = full.eval()(x, None, None, runtime_gather_output=True)[..., :vocab]
        assert torch.allclose(unwindowed[:, :window], theirs[:, :window], atol=1e-4)
        assert (unwindowed[:, window:] - theirs[:, window:]).abs().max() > 0.1

    rope = rope_parameters(arch)
    layer_kinds = ("full_attention", "sliding_attention")
    assert (dict.fromkeys(layer_kinds, rope) if model_type == "olmo3" else rope) == hf.config.rope_parameters
    back = to_hf(state, arch, vocab)  # the export maps it back tensor for tensor
    expected = dict(hf_state) | {"lm_head.weight": hf.lm_head.weight.detach()}
    assert back.keys() == expected.keys()
    assert all(torch.equal(back[k], expected[k]) for k in back)


# One torchrun worker: the imported base at `tp_size`, its logits and the full gradients of a loss.
WORKER = """
import sys
from pathlib import Path

import torch

from bar import parallel
from bar.model import build
from bar.model.hf import from_hf, read_hf
from bar.specs import ModelSpec, base_architecture
from bar.train.checkpoint import load_state

folder, tp_size, out = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
parallel.init(tp_size, 0)
arch = ModelSpec(seq_length=64, **base_architecture(folder))
model = build(arch, tp_size)
load_state(model, from_hf(read_hf(folder), arch))
x = torch.randint(0, 400, (3, 40), generator=torch.Generator().manual_seed(0))
logits = model(x, None, None, runtime_gather_output=True)
logits.pow(2).mean().backward()
grads = {n: parallel.full_tensor(p, p.grad) for n, p in model.named_parameters()}
if torch.distributed.get_rank() == 0:
    torch.save({"logits": logits.detach(), "grads": grads}, out)
parallel.shutdown()
"""


@pytest.mark.parametrize("model_type,head_dim,window", [("olmo3", None, 16), ("qwen3", 24, None)])
def test_an_imported_base_at_tp_2_gives_the_logits_and_gradients_it_gives_at_tp_1(
    tmp_path, model_type, head_dim, window
):
    """QK-norm at tp 2, each rank holding half the heads: OLMo 2's (and Olmo 3's, with its sliding
    layer) over the whole projection sums the mean of squares (and its gradient) over both;
    Qwen3's per-head weight sums its gradient."""
    import subprocess
    import sys

    folder = make_base(tmp_path / "base", model_type=model_type, head_dim=head_dim, window=window)
    (tmp_path / "worker.py").write_text(WORKER)
    results = {}
    for tp_size in (1, 2):
        out = tmp_path / f"tp{tp_size}.pt"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={tp_size}"]
        run = subprocess.run(
            [*cmd, str(tmp_path / "worker.py"), str(folder), str(tp_size), str(out)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert run.returncode == 0, run.stderr[-5000:]
        results[tp_size] = torch.load(out)
    one, two = results[1], results[2]
    diff = (one["logits"] - two["logits"]).abs().max().item()
    grad = max((one["grads"][n] - two["grads"][n]).abs().max().item() for n in one["grads"])
    print(f"{model_type} tp 2 against tp 1: max |logit diff| = {diff:.2e}, max |grad diff| = {grad:.2e}")
    assert diff < 1e-5 and grad < 1e-6
    q_norm = "decoder.layers.0.self_attention.q_layernorm.weight"
    assert one["grads"][q_norm].abs().max() > 1e-4  # the QK-norm's gradient is compared, not zeros
