"""The paired standard error of a difference of two pass rates on the same prompts."""

import math

import pytest

from bar.scoring import paired_se


def test_paired_se_counts_only_the_prompts_where_the_models_disagree():
    same = [True, False] * 50
    assert paired_se(same, same) == 0.0
    # One model flips 10 of 100 prompts from wrong to right: d is 1 on 10 prompts, 0 elsewhere.
    better = [True] * 60 + [False] * 40
    worse = [True] * 50 + [False] * 50
    var = (10 * 0.9**2 + 90 * 0.1**2) / 99
    assert paired_se(worse, better) == pytest.approx(100 * math.sqrt(var / 100))
    # Agreement on the other prompts does not matter; the same flips among 400 prompts halve it.
    assert paired_se(worse * 4, better * 4) < paired_se(worse, better) / 1.9
    with pytest.raises(ValueError, match="one length"):
        paired_se([True], [True, False])
