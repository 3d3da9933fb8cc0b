"""The router's fitting terms (`bar.router`)."""

import torch

from bar.model.moe import upcycle
from conftest import small_arch

ARCH = small_arch()


def test_domain_loss_routes_each_sample_as_its_expert_did(tmp_path, dense_states, megatron):
    """fit_router's `domain_loss`: expert 1's sample uses tokens 0-7, expert 2's tokens 8-15.
    Router-only training with the term routes each token as its expert's own router rows (as
    merged) would between the anchor and that expert, and almost nothing to the other expert;
    the LM loss alone does not. Nothing but the router changes."""
    from bar.model import build
    from bar.model.moe import set_trainable
    from bar.router import DomainRouting
    from bar.specs import RouterSpec
    from bar.train import train
    from bar.train.batches import Batches
    from bar.train.checkpoint import Resumable, full_state, load_state

    anchor, base = dense_states
    merged = upcycle(anchor, base, ARCH.num_layers)
    for layer in range(ARCH.num_layers):  # 3 slots: the anchor and two copies of the base FFN
        for fc in ("linear_fc1", "linear_fc2"):
            key = f"decoder.layers.{layer}.mlp.experts.local_experts.{{}}.{fc}.weight"
            merged[key.format(2)] = merged[key.format(1)] + 0.01 * torch.randn_like(merged[key.format(1)])
        merged[f"decoder.layers.{layer}.mlp.router.weight"] = 0.3 * torch.randn(3, 32)
    g = torch.Generator().manual_seed(0)
    items = [(torch.randint(lo, lo + 8, (24,), generator=g).tolist(), [True] * 24) for lo in (0, 8) for _ in range(16)]
    slots = [1] * 16 + [2] * 16
    spec = RouterSpec(steps=60, batch_size=4, optim={"lr": 3e-2, "warmup_steps": 1}, domain_loss=1.0)
    batching = dict(batch_size=4, seq_length=ARCH.seq_length, pad_id=0, seed=0)

    def routing(weight: float) -> tuple[float, float, dict]:
        """Mean probability on the other expert, mean |p_0 / (p_0 + p_own) - q_0| where q is the
        expert's own split (from the merged rows), and the trained state."""
        torch.manual_seed(0)
        model = build(ARCH, 1, num_experts=3)
        load_state(model, merged)
        set_trainable(model, ["router"], freeze_anchor_row=False)
        batches = DomainRouting(model, items, slots, weight, **batching) if weight else Batches(items, **batching)
        train(model, batches, spec, Resumable(tmp_path / f"w{weight}", "fp"), desc="router")
        after = full_state(model)
        model.eval()
        seen = []  # (router input, probabilities) of each layer for the item being scored
        for layer in model.decoder.layers:
            layer.mlp.router.register_forward_hook(lambda module, args, out: seen.append((args[0], out[0])))
        other, split = [], []
        with torch.no_grad():
            for (ids, _), slot in zip(items, slots):
                seen.clear()
                model(torch.tensor([ids]), None, None)
                for layer, (hidden, p) in enumerate(seen):
                    rows = merged[f"decoder.layers.{layer}.mlp.router.weight"][[0, slot]]
                    q = torch.softmax(hidden.reshape(len(ids), -1) @ rows.t(), dim=-1)
                    other.append(p[:, 3 - slot].mean().item())
                    split.append((p[:, 0] / (p[:, 0] + p[:, slot]) - q[:, 0]).abs().mean().item())
        return sum(other) / len(other), sum(split) / len(split), after

    plain_other, plain_split, _ = routing(0.0)
    other, split, state = routing(1.0)
    assert other < 0.1 and split < 0.1, (other, split)
    assert plain_other > other + 0.1 or plain_split > split + 0.1, (plain_other, plain_split)
    assert {k for k in merged if not torch.equal(merged[k], state[k])} == {
        f"decoder.layers.{i}.mlp.router.weight" for i in range(ARCH.num_layers)
    }
