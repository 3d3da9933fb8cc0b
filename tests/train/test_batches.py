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
