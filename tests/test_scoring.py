"""The paired standard error of a difference of two pass rates on the same prompts; HumanEval's scoring."""

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


def test_humaneval_runs_each_problems_test_on_a_reply_in_the_sandbox():
    """HumanEval's reference solutions pass (a whole function in a fence, or the body alone),
    but for the one problem whose solution imports hashlib, which the sandbox denies; wrong code fails."""
    from bar import humaneval

    problems = humaneval.problems()
    assert len(problems) == 164
    whole = [f"```python\n{p['prompt']}{p['canonical_solution']}```" for p in problems]
    ok = humaneval.passed(problems, whole)
    assert [p["task_id"] for p, good in zip(problems, ok) if not good] == ["HumanEval/162"]
    assert humaneval.passed(problems[:3], [p["canonical_solution"] for p in problems[:3]]) == [True] * 3
    assert humaneval.passed(problems[:2], ["    return None", "```python\ndef nothing(): pass\n```"]) == [False, False]
