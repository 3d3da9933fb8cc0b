"""Mixed precision: a bf16 model trains fp32 main weights (bar.train.optimizer)."""

import pytest
import torch

from bar.specs import OptimSpec
from conftest import small_arch

ARCH = small_arch()
BF16 = ARCH.model_copy(update={"precision": "bf16"})


def model_of(arch, seed=0):
    from bar.model import build

    torch.manual_seed(seed)
    return build(arch, 1).train()


def loss_of(model, x):
    return model(x[:, :-1], None, None, labels=x[:, 1:]).mean()


def batch(seed):
    return torch.randint(0, 320, (4, 17), generator=torch.Generator().manual_seed(seed))


def test_a_bf16_model_keeps_fp32_main_weights_that_carry_steps_too_small_for_bf16(megatron):
    from bar.train import optimizer

    model = model_of(BF16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert loss_of(model, batch(0)).dtype == torch.float32  # the loss is computed in fp32
    opt = optimizer(model, OptimSpec(lr=2e-5, weight_decay=0.0))  # a step far below bf16's resolution
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for step in range(30):
        opt.zero_grad()
        loss_of(model, batch(step)).backward()
        opt.step(1.0)
    moved = 0
    for name, p in model.named_parameters():
        main = opt.main[name]
        assert main.dtype == torch.float32 and main is not p
        assert torch.equal(p.detach(), main.bfloat16())  # the model is its main weights, rounded
        moved += int((main != before[name].float()).sum())
    assert moved > 0.9 * sum(p.numel() for p in model.parameters())
    # Without main weights (a bf16 AdamW on the bf16 parameters) most of these steps round away.
    plain = model_of(BF16)
    adamw = torch.optim.AdamW(plain.parameters(), lr=2e-5, weight_decay=0.0)
    for step in range(30):
        adamw.zero_grad()
        loss_of(plain, batch(step)).backward()
        adamw.step()
    kept = sum(int((p.detach() == before[n]).sum()) for n, p in plain.named_parameters())
    assert kept > 0.5 * sum(p.numel() for p in plain.parameters())


def test_gradients_of_several_backward_passes_accumulate_in_fp32(megatron):
    from bar.train import optimizer

    model = model_of(BF16)
    opt = optimizer(model, OptimSpec(lr=1e-3))
    grads = []
    for seed in (1, 2):  # each backward alone, as bf16 gradients
        opt.zero_grad()
        loss_of(model, batch(seed)).backward()
        grads.append({n: m.grad.clone() for n, m in opt.main.items()})
        assert all(p.grad is None for p in model.parameters())  # handed over to the main weights
    opt.zero_grad()
    loss_of(model, batch(1)).backward()
    loss_of(model, batch(2)).backward()
    for name, main in opt.main.items():
        assert main.grad.dtype == torch.float32
        assert torch.equal(main.grad, grads[0][name] + grads[1][name]), name


def test_the_optimizer_state_round_trip_restores_main_weights_and_moments_bit_for_bit(megatron):
    from bar.train import optimizer
    from bar.train.checkpoint import full_state, load_state

    def train(model, opt, steps):
        for step in steps:
            opt.zero_grad()
            loss_of(model, batch(step)).backward()
            opt.step(1.0)

    model = model_of(BF16)
    opt = optimizer(model, OptimSpec(lr=1e-3))
    train(model, opt, range(3))
    saved_model, saved_opt = full_state(model), opt.state_tensors()
    assert {k.rsplit(".", 1)[1] for k in saved_opt} == {"exp_avg", "exp_avg_sq", "step", "main"}
    train(model, opt, range(3, 6))

    resumed = model_of(BF16, seed=7)
    load_state(resumed, saved_model)
    opt2 = optimizer(resumed, OptimSpec(lr=1e-3))
    opt2.load_state_tensors(saved_opt)
    train(resumed, opt2, range(3, 6))
    for name, p in model.named_parameters():
        assert torch.equal(p, dict(resumed.named_parameters())[name]), name
        assert torch.equal(opt.main[name], opt2.main[name]), name


def test_an_fp32_model_trains_its_own_parameters(megatron):
    from bar.train import optimizer

    model = model_of(ARCH)
    opt = optimizer(model, OptimSpec(lr=1e-3))
    assert all(opt.main[n] is p for n, p in model.named_parameters())
    assert not any(k.endswith(".main") for k in opt.state_tensors())


def test_a_precision_other_than_fp32_or_bf16_is_refused_naming_the_key(tmp_path):
    import shutil

    from bar.specs import SpecError, Specs
    from conftest import ROOT

    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    model = tmp_path / "specs" / "model.yaml"
    import re

    model.write_text(re.sub(r"^precision: .*$", "precision: fp16", model.read_text(), flags=re.M))
    with pytest.raises(SpecError) as e:
        Specs(tmp_path).model
    message = str(e.value)
    assert "\n" not in message and "model.yaml" in message and "precision" in message
    assert "'fp32'" in message and "'bf16'" in message and "'auto'" in message and "fp16" in message


@pytest.mark.parametrize("native", [True, False])
def test_auto_precision_is_bf16_where_the_device_has_bf16_units_and_bf16_elsewhere_is_refused(
    tmp_path, monkeypatch, native
):
    """`precision: auto` (the default) resolves to bf16 on a device with bf16 units and to fp32
    elsewhere; an explicit bf16 where PyTorch would only emulate it stops a stage before any work.
    The probe agrees with torch on this machine; then the answer is set both ways."""
    import re
    import shutil

    import torch

    from bar.specs import SpecError, Specs, device
    from bar.stages import check_precision
    from conftest import ROOT

    if not torch.cuda.is_available():  # what torch says of this CPU, read without torch
        assert device.bf16_native() == (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    assert Specs(tmp_path).model.precision == ("bf16" if device.bf16_native() else "fp32")

    monkeypatch.setattr(device, "bf16_native", lambda: native)
    assert Specs(tmp_path).model.precision == ("bf16" if native else "fp32")
    check_precision()  # auto is never refused
    model = tmp_path / "specs" / "model.yaml"
    model.write_text(re.sub(r"^precision: .*$", "precision: bf16", model.read_text(), flags=re.M))
    if native:
        check_precision()
        return
    with pytest.raises(SpecError) as e:
        check_precision()
    message = str(e.value)
    assert "\n" not in message and "model.yaml: precision = bf16" in message and "fp32, or auto" in message


def test_replicas_share_the_tensors_they_step_by_size():
    from bar.train.optimizer import owners

    sizes = {"embedding": 1000, "fc1": 600, "fc2": 300, "qkv": 300, "norm": 10, "router": 8}
    assert owners(sizes, 1) == dict.fromkeys(sizes, 0)
    split = owners(sizes, 2)
    assert split == owners(dict(reversed(sizes.items())), 2)  # the same on every rank, whatever the order
    load = [sum(n for k, n in sizes.items() if split[k] == r) for r in (0, 1)]
    assert sorted(load) == [1018, 1200]
    assert set(owners(sizes, 4).values()) == {0, 1, 2, 3}
