"""bar.data.mixture: how an expert's mixture is counted out of the domain pools and drawn."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bar.data.mixture import counts, mix, shares
from bar.specs import MixtureSpec, SpecError


@given(
    st.integers(0, 10_000),
    st.dictionaries(st.sampled_from("abcdef"), st.floats(0.01, 100), min_size=1),
)
def test_shares_add_up_and_each_is_within_one_of_its_exact_share(total, weights):
    got = shares(total, weights)
    assert set(got) == set(weights) and sum(got.values()) == total
    norm = sum(weights.values())
    assert all(abs(got[k] - total * w / norm) < 1 for k, w in weights.items())


def test_general_chat_is_a_share_of_sft_only():
    mixture = MixtureSpec(
        sources={"math": 3, "code": 1}, general_share=0.1, sizes={"sft": 100, "rl": 40, "midtrain": 0}
    )
    assert counts(mixture, "sft") == {"math": 68, "code": 22, "general": 10}
    assert counts(mixture, "rl") == {"math": 30, "code": 10}
    assert counts(mixture, "midtrain") == {}


def test_mix_draws_without_replacement_the_same_rows_for_the_same_seed_and_name(tiny_project, monkeypatch):
    monkeypatch.chdir(tiny_project)
    mixture = MixtureSpec(sources={"math": 1, "code": 1}, general_share=0.25, sizes={"sft": 40})
    first = mix("math", mixture, ["sft"], 0, "specs/experts/math.yaml")["sft"]
    assert len(first) == 40 and len({json.dumps(r, sort_keys=True) for r in first}) == 40  # no row twice
    assert sorted(r["domain"] for r in first) == ["code"] * 15 + ["general"] * 10 + ["math"] * 15
    assert mix("math", mixture, ["sft"], 0, "specs/experts/math.yaml")["sft"] == first

    def drawn(rows) -> set[str]:
        return {json.dumps(r, sort_keys=True) for r in rows}

    # Each expert, and each seed, draws other rows from the same pools (not only another order).
    assert drawn(mix("code", mixture, ["sft"], 0, "specs/experts/code.yaml")["sft"]) != drawn(first)
    assert drawn(mix("math", mixture, ["sft"], 1, "specs/experts/math.yaml")["sft"]) != drawn(first)


def test_a_mixture_larger_than_its_pool_names_the_spec_the_numbers_and_the_fix(tiny_project, monkeypatch):
    monkeypatch.chdir(tiny_project)
    mixture = MixtureSpec(sources={"math": 1}, sizes={"rl": 10**6})
    with pytest.raises(SpecError, match=r"specs/experts/math.yaml: mixture.sizes.rl asks for 1000000 math items"):
        mix("math", mixture, ["rl"], 0, "specs/experts/math.yaml")
    with pytest.raises(SpecError, match=r"raise specs/data.yaml domains.math.rl"):
        mix("math", mixture, ["rl"], 0, "specs/experts/math.yaml")
