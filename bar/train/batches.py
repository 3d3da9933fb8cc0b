"""Packed training batches, a pure function of (items, seed, step).

Items (token ids + which tokens are trained) are packed whole into rows of seq_length + 1 tokens
(one longer goes on in the next rows), in an order shuffled per epoch. Each row carries segment
ids (`documents`, passed to the model as its attention mask: `bar.model.attention`) so attention
never crosses from one item into another: a packed row trains exactly like its items would
separately. Because a batch depends only on the step, a resumed run sees the same data.
"""

from __future__ import annotations

import random

import torch

Item = tuple[list[int], list[bool]]


def pack(items: list[Item], seq_length: int, pad_id: int) -> list[tuple[list[int], list[bool], list[int]]]:
    """Rows of (tokens, trained, segment) of length seq_length + 1; segment 0 is padding."""
    rows, cur = [], ([], [], [])
    width = seq_length + 1

    def flush():
        if cur[0]:
            n = width - len(cur[0])
            rows.append((cur[0] + [pad_id] * n, cur[1] + [False] * n, cur[2] + [0] * n))

    # An item longer than a row (a long document) goes on in the next rows, as a new segment each:
    # never cut. Chat examples that long are left out before (`tokenizer.example_items`).
    pieces = ((i[s : s + width], t[s : s + width]) for i, t in items for s in range(0, len(i), width))
    for ids, trained in pieces:
        if len(cur[0]) + len(ids) > width:
            flush()
            cur = ([], [], [])
        seg = (cur[2][-1] if cur[2] else 0) + 1
        cur[0].extend(ids), cur[1].extend(trained), cur[2].extend([seg] * len(ids))
    flush()
    return rows


class Batches:
    def __init__(self, items: list[Item], *, batch_size: int, seq_length: int, pad_id: int, seed: int):
        if not items:
            raise ValueError("no training items")
        self.items, self.batch_size, self.seq_length = items, batch_size, seq_length
        self.pad_id, self.seed = pad_id, seed
        self._epochs: dict[int, list] = {}
        self._lengths: dict[int, int] = {}  # rows per epoch: finding a step's epoch packs no earlier one again

    def _epoch(self, epoch: int) -> list:
        if epoch not in self._epochs:
            order = list(range(len(self.items)))
            random.Random(self.seed * 100_003 + epoch).shuffle(order)
            # Keep two epochs: a batch may straddle an epoch boundary.
            self._epochs = {e: r for e, r in self._epochs.items() if e == epoch - 1}
            self._epochs[epoch] = self._arrange([self.items[i] for i in order])
            self._lengths[epoch] = len(self._epochs[epoch])
        return self._epochs[epoch]

    def _arrange(self, items: list) -> list:
        return pack(items, self.seq_length, self.pad_id)

    def num_tokens(self, step: int) -> int:
        """Trained tokens in this step's batch."""
        return int(self.get(step)["loss_mask"].sum())

    def rows(self, step: int) -> list:
        """The packed rows of this step's batch."""
        rows, epoch, index = [], 0, step * self.batch_size
        while len(rows) < self.batch_size:
            if epoch not in self._lengths:
                self._epoch(epoch)
            if index >= self._lengths[epoch]:
                index -= self._lengths[epoch]
                epoch += 1
                continue
            rows.append(self._epoch(epoch)[index])
            index += 1
        return rows

    def get(self, step: int) -> dict[str, torch.Tensor]:
        rows = self.rows(step)
        tokens = torch.tensor([r[0] for r in rows])
        trained = torch.tensor([r[1] for r in rows])
        segments = torch.tensor([r[2] for r in rows])
        # Token t+1 is predicted from tokens <= t of its own segment only.
        same = segments[:, 1:] == segments[:, :-1]
        return {
            "tokens": tokens[:, :-1],
            "labels": tokens[:, 1:],
            "loss_mask": (trained[:, 1:] & same & (segments[:, 1:] > 0)).float(),
            "documents": segments[:, :-1],
        }


class Replay(Batches):
    """Batches of rows packed already (`Batches.rows` of other runs: the monolithic baseline
    replays what each expert trained on), in a new order each epoch."""

    def __init__(self, rows: list, *, batch_size: int, seed: int):
        super().__init__(
            rows, batch_size=batch_size, seq_length=len(rows[0][0]) - 1 if rows else 0, pad_id=0, seed=seed
        )

    def _arrange(self, rows: list) -> list:
        return rows
