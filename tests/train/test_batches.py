"""Batches, their rows, and what the monolithic baseline replays of the experts' data."""

from collections import Counter

from bar.specs import RLVRSpec, Specs
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


def test_monolithic_replays_each_experts_phase_with_its_seed(tmp_path):
    import shutil

    from bar.stages.baseline import plan
    from bar.stages.train_expert import phase_seed
    from conftest import ROOT, set_params

    shutil.copytree(ROOT / "specs", tmp_path / "specs")  # the repository's specs, default preset
    shutil.copy(ROOT / "params.yaml", tmp_path)
    set_params(tmp_path, preset="default", baselines=["monolithic"])
    specs = Specs(tmp_path)
    phases = {p.label: p for p in plan(specs, "monolithic")}
    for label, p in phases.items():
        have = [e for e in specs.params.experts if getattr(specs.expert(e).phases, label)]
        assert [seed for _, seed in p.replay] == [
            phase_seed(specs, specs.expert(e).phases.enabled().index(label)) for e in have
        ]
        experts = [getattr(specs.expert(e).phases, label) for e in have]
        # The experts' phase specs, but a dense model has no router: its lr_scale is dropped.
        assert [r.model_dump(exclude={"lr_scale"}) for r, _ in p.replay] == [
            x.model_dump(exclude={"lr_scale"}) for x in experts
        ]
        assert [r.lr_scale for r, _ in p.replay] == [
            {g: v for g, v in x.lr_scale.items() if g != "router"} for x in experts
        ]
        assert "router" not in p.spec.lr_scale
    assert any("router" in specs.expert(e).phases.sft.lr_scale for e in specs.params.experts)
    # The default experts: RLVR is math's 80 x 16 prompts and code's 80 x 8, 16 a step.
    assert phases["rlvr"].spec.steps == (80 * 16 + 80 * 8) // 16 == 120
    assert phases["sft"].spec.steps == sum(specs.expert(e).phases.sft.steps for e in specs.params.experts)
