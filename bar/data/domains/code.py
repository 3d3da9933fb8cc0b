"""code: a one-sentence spec -> a short Python function, verified by executing it.

A third of the tasks take one step (arithmetic, a comparison, a list or string function), a
third several (a chain of operations, a filtered sum or count, a bound, a clamp), and a third
state a rule only by examples, which the tests go beyond. The harder two have six tests each,
edge cases among them: the held-out set the default code expert does not saturate.

check = {"entry": function name, "tests": [[args, expected], ...]}. The response may be bare
code or sit inside a ```python fence; it passes when every test returns `expected` (compared
as JSON, so 1 != True and 1 != 1.0). Execution happens in bar.data.sandbox.
"""

from __future__ import annotations

import json
import random
import re

from bar.data import sandbox
from bar.data.domains._code_sequences import SEQUENCE_FAMILIES
from bar.data.domains._code_steps import EXAMPLE_FAMILIES, STEP_FAMILIES
from bar.data.domains._code_tasks import NUMBER_FAMILIES, Task
from bar.data.example import Example, is_eval_prompt

DOMAIN = "code"

_GENERIC_NAMES = ("f", "compute", "solve", "transform", "helper", "calc")
_PROMPTS = (
    "Write a Python function `{sig}` that {desc}.",
    "Implement `{sig}` in Python: it {desc}.",
    "Define a Python function `{sig}` which {desc}.",
)
# A fenced block; an unclosed fence (an answer cut off at the length limit) runs to the end.
_FENCE = re.compile(r"```[ \t]*(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)
FAMILIES = NUMBER_FAMILIES + SEQUENCE_FAMILIES  # rng.choice over them: the order is the data


def _source(name: str, task: Task) -> str:
    body = "\n".join(f"    {line}" for line in task.body.split("\n"))
    return f"def {name}({', '.join(task.params)}):\n{body}"


def _generate(rng: random.Random) -> tuple[Example, str]:
    """An example and the plain description of what its function returns."""
    kind = rng.random()  # a third each: one step, several, a rule shown by examples
    task = rng.choice(FAMILIES if kind < 1 / 3 else STEP_FAMILIES if kind < 2 / 3 else EXAMPLE_FAMILIES)(rng)
    name = rng.choice(task.names) if rng.random() < 0.7 else rng.choice(_GENERIC_NAMES)
    signature = f"{name}({', '.join(task.params)})"
    prompt = rng.choice(_PROMPTS).format(sig=signature, desc=task.description)
    tests = [[args, task.solve(*args)] for args in task.inputs]
    example = Example(DOMAIN, prompt, _source(name, task), {"entry": name, "tests": tests})
    return example, task.description


def sample(rng: random.Random) -> Example:
    return _generate(rng)[0]


# --- documents ------------------------------------------------------------------------


def _snippet(example: Example, description: str) -> str:
    """The function with its spec as a comment and one call shown, like a tutorial snippet."""
    args, expected = example.check["tests"][0]
    call = f"{example.check['entry']}({', '.join(repr(a) for a in args)})"
    comment = f"# {description[0].upper()}{description[1:]}."
    return f"{comment}\n{example.response}\n\nprint({call})  # {expected!r}"


def document(rng: random.Random) -> str:
    count = rng.randint(1, 3)
    snippets: list[str] = []
    while len(snippets) < count:
        example, description = _generate(rng)
        if not is_eval_prompt(example.prompt):  # never show an eval prompt's solution
            snippets.append(_snippet(example, description))
    return "\n\n\n".join(snippets)


# --- verification ---------------------------------------------------------------------


def extract_code(response: str) -> str:
    """The first ```python (or bare ```) fenced block if there is one, else the whole response."""
    match = _FENCE.search(response)
    return match.group(1) if match else response


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def _passes(outputs: list | None, tests: list) -> bool:
    if outputs is None or len(outputs) != len(tests):
        return False
    return all(_canonical(out) == _canonical(expected) for out, (_, expected) in zip(outputs, tests))


def verify_batch(responses: list[str], checks: list[dict]) -> list[bool]:
    programs = [
        (extract_code(response), check["entry"], [args for args, _ in check["tests"]])
        for response, check in zip(responses, checks)
    ]
    results = sandbox.run_functions(programs)
    return [_passes(outputs, check["tests"]) for outputs, check in zip(results, checks)]


def verify(response: str, check: dict) -> bool:
    return verify_batch([response], [check])[0]


def check_problem(check: dict) -> str | None:
    entry, tests = check.get("entry"), check.get("tests")
    if not (isinstance(entry, str) and entry.isidentifier()):
        return 'a code check needs "entry": the function name (a Python identifier)'
    if not (isinstance(tests, list) and tests):
        return 'a code check needs "tests": a non-empty list of [args, expected] pairs'
    for index, test in enumerate(tests):
        if not (isinstance(test, list) and len(test) == 2 and isinstance(test[0], list)):
            return f'"tests"[{index}] must be [args, expected] with args a list, got {test!r}'
    return None
