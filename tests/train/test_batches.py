"""Batches and their rows, and the prompts RLVR draws."""

from collections import Counter

from bar.specs import RLVRSpec
from bar.train import rlvr
from bar.train.batches import Batches, Replay


def items(n: int) -> list:
    return [([i] * (3 + i % 5), [True] * (3 + i % 5)) for i in range(n)]


def test_rows_are_what_a_batch_is_made_of_and_replay_visits_each_once_per_epoch():
    batches = Batches(items(50), batch_size=4, seq_length=15, pad_id=0, seed=3)
    rows = [row for step in range(6) for row in batches.rows(step)]
    assert len(rows) == 24
    first = batches.get(0)
    assert first["tokens"].tolist() == [r[0][:-1] for r in rows[:4]]
    replay = Replay(rows, batch_size=8, seed=1)
    epoch = [tuple(map(tuple, r)) for step in range(3) for r in replay.rows(step)]
    assert Counter(epoch) == Counter(tuple(map(tuple, r)) for r in rows)  # each row once
    assert epoch != [tuple(map(tuple, r)) for r in rows]  # in a new order
    # Trained tokens are a property of the rows: replaying them trains the same tokens.
    assert sum(replay.num_tokens(s) for s in range(3)) == sum(batches.num_tokens(s) for s in range(6))


def test_rlvr_draws_every_prompt_once_before_any_twice():
    spec = RLVRSpec(steps=5, prompts_per_step=4, trainable=["domain_ffn"], optim={"lr": 1e-5})
    drawn = rlvr.draws(list(range(7)), spec, seed=0)
    assert len(drawn) == 20 and sorted(drawn[:7]) == list(range(7)) and sorted(drawn[7:14]) == list(range(7))
    assert drawn == rlvr.draws(list(range(7)), spec, seed=0) != rlvr.draws(list(range(7)), spec, seed=1)


def test_an_item_longer_than_a_row_goes_on_in_the_next_rows_never_cut():
    """A long document is split over rows, each piece a segment of its own: every token is kept,
    and none is predicted across a piece boundary."""
    from bar.train.batches import pack

    long = list(range(1, 21))
    rows = pack([([7, 7], [True] * 2), (long, [True] * 20)], seq_length=7, pad_id=0)
    tokens = [t for r in rows for t, s in zip(r[0], r[2]) if s]
    assert tokens == [7, 7, *long]
    assert all(len(r[0]) == 8 for r in rows)
    batch = Batches([(long, [True] * 20)], batch_size=3, seq_length=7, pad_id=0, seed=0).get(0)
    assert batch["loss_mask"].sum() == 20 - 3  # the first token of each of the three pieces has no context
