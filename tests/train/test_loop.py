"""bar.train.train: a step's batch in micro-batches gives the whole batch's loss and gradient."""

import pytest
import torch


def trained(micro_batch_size, tmp_path, arch):
    from bar.model import build
    from bar.specs import OptimSpec, TrainSpec
    from bar.train import train
    from bar.train.batches import Batches
    from bar.train.checkpoint import Resumable

    torch.manual_seed(0)
    model = build(arch, 1)
    g = torch.Generator().manual_seed(1)
    # Items of different lengths and trained spans: micro-batches hold different token counts.
    items = []
    for _ in range(24):
        n = int(torch.randint(4, 30, (1,), generator=g))
        items.append((torch.randint(1, arch.vocab_size, (n,), generator=g).tolist(), [i >= n // 3 for i in range(n)]))
    spec = TrainSpec(
        steps=1,
        batch_size=4,
        micro_batch_size=micro_batch_size,
        optim=OptimSpec(lr=1e-2, grad_clip=0.0),
        checkpoint_every=100,
    )
    batches = Batches(items, batch_size=4, seq_length=arch.seq_length, pad_id=0, seed=0)
    log = train(model, batches, spec, Resumable(tmp_path / str(micro_batch_size), "m"), "m", None, micro_batch_size)
    return log[0]["loss"], {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("micro", [2, 1])
def test_accumulated_micro_batches_give_the_whole_batchs_loss_and_gradient(megatron, tmp_path, micro):
    from conftest import small_arch

    arch = small_arch(seq_length=32)
    loss, grads = trained(None, tmp_path, arch)
    micro_loss, micro_grads = trained(micro, tmp_path, arch)
    diff = max((grads[k] - micro_grads[k]).abs().max().item() for k in grads)
    scale = max(g.abs().max().item() for g in grads.values())
    print(f"micro-batches of {micro} against the batch of 4: max |grad diff| = {diff:.1e} (max |grad| {scale:.1e})")
    assert micro_loss == pytest.approx(loss, abs=1e-6)
    assert diff < 1e-6 < scale


def test_a_micro_batch_that_does_not_divide_the_batch_is_refused():
    from bar.specs import OptimSpec, TrainSpec

    with pytest.raises(ValueError, match="micro_batch_size = 3 must divide the rows of each replica"):
        TrainSpec(steps=1, batch_size=8, micro_batch_size=3, optim=OptimSpec(lr=1))
    with pytest.raises(ValueError, match="batch_size = 8 must be a multiple of dp_size = 3"):
        TrainSpec(steps=1, batch_size=8, dp_size=3, optim=OptimSpec(lr=1))


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_recomputed_activations_give_the_same_gradients(megatron, tmp_path, precision):
    """Megatron-Core's full recomputation on the CPU (bar.parallel.cpu, patch 4), in an MoE whose
    embeddings are frozen, as an expert's midtrain and the router have them: every trainable
    weight gets the gradient it gets without recomputation."""
    from bar.model import build
    from bar.model.moe import set_trainable
    from bar.train.batches import Batches
    from conftest import small_arch

    grads = {}
    for recompute in (False, True):
        arch = small_arch(seq_length=32, precision=precision, recompute=recompute)
        torch.manual_seed(0)
        model = build(arch, 1, num_experts=2, z_loss=1e-3)
        assert model.config.recompute_granularity == ("full" if recompute else None)
        set_trainable(model, ["domain_ffn", "router"])
        g = torch.Generator().manual_seed(1)
        items = [(torch.randint(1, arch.vocab_size, (30,), generator=g).tolist(), [True] * 30) for _ in range(4)]
        batch = Batches(items, batch_size=4, seq_length=32, pad_id=0, seed=0).get(0)
        model.train()
        per_token = model(batch["tokens"], None, batch["documents"], labels=batch["labels"])
        (per_token.float() * batch["loss_mask"]).sum().backward()
        grads[recompute] = {n: p.grad.float().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert grads[True].keys() == grads[False].keys() and len(grads[True]) == 2 * 2 + 2  # fc1, fc2, router per layer
    for name, g in grads[False].items():
        assert g.abs().max() > 0, name
        assert torch.equal(grads[True][name], g), name
