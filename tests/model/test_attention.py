"""Packed rows: each document attends to itself only (bar.model.attention, document ids), within
its sliding window if the layer has one."""

import pytest
import torch

from conftest import small_arch


@pytest.mark.parametrize("window", [None, 12], ids=["full", "sliding"])  # documents of 20 and 31 outgrow 12
def test_a_packed_row_gives_each_document_the_losses_it_has_alone(megatron, window):
    from bar.model import build
    from bar.train.batches import Batches

    torch.manual_seed(0)
    model = build(small_arch(seq_length=64, sliding_window=window), 1, num_experts=2).eval()
    g = torch.Generator().manual_seed(0)
    items = [(torch.randint(1, 320, (n,), generator=g).tolist(), [True] * n) for n in (20, 9, 31)]
    batch = Batches(items, batch_size=1, seq_length=64, pad_id=0, seed=0).get(0)
    assert batch["documents"].dtype == torch.long and batch["documents"].shape == (1, 64)
    with torch.no_grad():
        packed = model(batch["tokens"], None, batch["documents"], labels=batch["labels"])[0]
        trained = batch["loss_mask"][0] > 0
        alone = []
        for n in sorted({int(d) for d in batch["documents"][0]} - {0}):
            where = (batch["documents"][0] == n).nonzero().flatten()
            tokens = batch["tokens"][:, where]
            labels = batch["labels"][:, where]
            alone.append(model(tokens, None, None, labels=labels)[0][:-1])  # the last predicts the next document
        packed_own = torch.cat(
            [
                packed[(batch["documents"][0] == n).nonzero().flatten()][:-1]
                for n in sorted({int(d) for d in batch["documents"][0]} - {0})
            ]
        )
    assert trained.sum() == len(packed_own) == sum(len(a) for a in alone)
    assert (packed_own - torch.cat(alone)).abs().max().item() < 1e-5
    # Across documents nothing leaks: changing the first document leaves the others' losses alone.
    other = batch["tokens"].clone()
    first = (batch["documents"][0] == 1).nonzero().flatten()
    other[0, first] = (other[0, first] + 1) % 320
    with torch.no_grad():
        changed = model(other, None, batch["documents"], labels=batch["labels"])[0]
    rest = batch["documents"][0] > 1
    assert torch.equal(changed[rest], packed[rest]) and not torch.equal(changed[first], packed[first])
