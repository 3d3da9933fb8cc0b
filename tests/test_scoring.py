"""HumanEval's scoring."""


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
