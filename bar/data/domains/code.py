"""code: a one-sentence spec -> a short Python function, verified by executing it.

check = {"entry": function name, "tests": [[args, expected], ...]}. The response may be bare
code or sit inside a ```python fence; it passes when every test returns `expected` (compared
as JSON, so 1 != True and 1 != 1.0). Execution happens in bar.data.sandbox.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass

from bar.data import sandbox
from bar.data.example import Example, is_eval_prompt
from bar.data.lexicon import ALL_WORDS, NAMES

DOMAIN = "code"

_NUMBER_PARAMS = ("x", "n", "a", "num", "value")
_PAIR_PARAMS = (("a", "b"), ("x", "y"), ("m", "n"), ("first", "second"))
_LIST_PARAMS = ("xs", "nums", "values", "items", "numbers")
_TEXT_PARAMS = ("s", "text", "word", "line")
_TEXT_PAIR_PARAMS = (("a", "b"), ("s", "t"), ("left", "right"), ("first", "second"))
_GENERIC_NAMES = ("f", "compute", "solve", "transform", "helper", "calc")
_PROMPTS = (
    "Write a Python function `{sig}` that {desc}.",
    "Implement `{sig}` in Python: it {desc}.",
    "Define a Python function `{sig}` which {desc}.",
)
# A fenced block; an unclosed fence (an answer cut off at the length limit) runs to the end.
_FENCE = re.compile(r"```[ \t]*(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL)


@dataclass(frozen=True)
class _Task:
    names: tuple[str, ...]  # fitting function names; a generic one is sometimes used instead
    params: tuple[str, ...]
    description: str  # completes "... that {description}."
    body: str  # function body, unindented, lines joined by "\n"
    solve: Callable  # reference implementation, computes the expected test outputs
    inputs: list[list]  # argument lists of the tests


# --- test inputs ----------------------------------------------------------------------


def _ints(rng: random.Random, low: int = -20, high: int = 20, count: int = 4) -> list[int]:
    return rng.sample(range(low, high + 1), count)


def _int_lists(rng: random.Random, count: int = 4) -> list[list[int]]:
    return [[rng.randint(-9, 20) for _ in range(rng.randint(1, 5))] for _ in range(count)]


def _texts(rng: random.Random, count: int = 4) -> list[str]:
    return rng.sample(ALL_WORDS, count)


def _one_arg(values: list) -> list[list]:
    return [[value] for value in values]


# --- families: numbers ----------------------------------------------------------------


def _multiply(rng: random.Random) -> _Task:
    k, x = rng.randint(2, 9), rng.choice(_NUMBER_PARAMS)
    names = (f"times_{k}", f"multiply_by_{k}", "scale") + {2: ("double",), 3: ("triple",)}.get(k, ())
    return _Task(
        names, (x,), f"returns {x} multiplied by {k}", f"return {x} * {k}", lambda v: v * k, _one_arg(_ints(rng))
    )


def _add(rng: random.Random) -> _Task:
    k, x = rng.randint(1, 20), rng.choice(_NUMBER_PARAMS)
    return _Task(
        (f"add_{k}", f"plus_{k}", "increase"),
        (x,),
        f"returns {x} plus {k}",
        f"return {x} + {k}",
        lambda v: v + k,
        _one_arg(_ints(rng)),
    )


def _subtract(rng: random.Random) -> _Task:
    k, x = rng.randint(1, 20), rng.choice(_NUMBER_PARAMS)
    return _Task(
        (f"minus_{k}", f"subtract_{k}", "decrease"),
        (x,),
        f"returns {x} minus {k}",
        f"return {x} - {k}",
        lambda v: v - k,
        _one_arg(_ints(rng)),
    )


def _square(rng: random.Random) -> _Task:
    x = rng.choice(_NUMBER_PARAMS)
    return _Task(
        ("square", "squared"),
        (x,),
        f"returns the square of {x}",
        f"return {x} * {x}",
        lambda v: v * v,
        _one_arg(_ints(rng)),
    )


def _affine(rng: random.Random) -> _Task:
    k, c, x = rng.randint(2, 9), rng.randint(1, 9), rng.choice(_NUMBER_PARAMS)
    return _Task(
        ("linear", "affine", f"times_{k}_plus_{c}"),
        (x,),
        f"returns {x} times {k} plus {c}",
        f"return {x} * {k} + {c}",
        lambda v: v * k + c,
        _one_arg(_ints(rng)),
    )


def _floor_divide(rng: random.Random) -> _Task:
    k, x = rng.randint(2, 9), rng.choice(_NUMBER_PARAMS)
    return _Task(
        (f"div_{k}", f"divide_by_{k}", "split_evenly"),
        (x,),
        f"returns {x} divided by {k}, rounded down",
        f"return {x} // {k}",
        lambda v: v // k,
        _one_arg(_ints(rng, 0, 60)),
    )


def _remainder(rng: random.Random) -> _Task:
    k, x = rng.randint(2, 9), rng.choice(_NUMBER_PARAMS)
    return _Task(
        (f"mod_{k}", "remainder", f"remainder_by_{k}"),
        (x,),
        f"returns the remainder of {x} divided by {k}",
        f"return {x} % {k}",
        lambda v: v % k,
        _one_arg(_ints(rng, 0, 60)),
    )


def _absolute(rng: random.Random) -> _Task:
    x = rng.choice(_NUMBER_PARAMS)
    values = _ints(rng, -20, -1, 2) + _ints(rng, 0, 20, 2)
    rng.shuffle(values)
    return _Task(
        ("absolute", "magnitude", "distance_from_zero"),
        (x,),
        f"returns the absolute value of {x}",
        f"return abs({x})",
        abs,
        _one_arg(values),
    )


# --- families: conditionals -----------------------------------------------------------


def _parity_inputs(rng: random.Random) -> list[list]:
    values = [2 * v for v in _ints(rng, -10, 10, 2)] + [2 * v + 1 for v in _ints(rng, -10, 10, 2)]
    rng.shuffle(values)
    return _one_arg(values)


def _is_even(rng: random.Random) -> _Task:
    x = rng.choice(_NUMBER_PARAMS)
    return _Task(
        ("is_even", "even", "check_even"),
        (x,),
        f"returns True if {x} is even, otherwise False",
        f"return {x} % 2 == 0",
        lambda v: v % 2 == 0,
        _parity_inputs(rng),
    )


def _is_odd(rng: random.Random) -> _Task:
    x = rng.choice(_NUMBER_PARAMS)
    return _Task(
        ("is_odd", "odd", "check_odd"),
        (x,),
        f"returns True if {x} is odd, otherwise False",
        f"return {x} % 2 == 1",
        lambda v: v % 2 == 1,
        _parity_inputs(rng),
    )


def _greater_than(rng: random.Random) -> _Task:
    k, x = rng.randint(0, 20), rng.choice(_NUMBER_PARAMS)
    # k itself is a test input so `>=` fails where `>` is asked for.
    values = [k, k + rng.randint(1, 10), k - rng.randint(1, 10), k + rng.randint(11, 30)]
    rng.shuffle(values)
    return _Task(
        (f"above_{k}", f"greater_than_{k}", "is_big"),
        (x,),
        f"returns True if {x} is greater than {k}, otherwise False",
        f"return {x} > {k}",
        lambda v: v > k,
        _one_arg(values),
    )


def _divisible(rng: random.Random) -> _Task:
    k, x = rng.randint(2, 9), rng.choice(_NUMBER_PARAMS)
    values = [k * rng.randint(0, 9), k * rng.randint(1, 9) + rng.randint(1, k - 1)]
    values += _ints(rng, 0, 60, 2)
    rng.shuffle(values)
    return _Task(
        (f"divisible_by_{k}", f"is_multiple_of_{k}"),
        (x,),
        f"returns True if {x} is divisible by {k}, otherwise False",
        f"return {x} % {k} == 0",
        lambda v: v % k == 0,
        _one_arg(values),
    )


def _sign(rng: random.Random) -> _Task:
    x = rng.choice(_NUMBER_PARAMS)
    values = [rng.randint(1, 30), -rng.randint(1, 30), 0, rng.randint(-30, 30)]
    rng.shuffle(values)
    body = f"if {x} > 0:\n    return 1\nif {x} < 0:\n    return -1\nreturn 0"
    return _Task(
        ("sign", "signum", "sign_of"),
        (x,),
        f"returns 1 if {x} is positive, -1 if {x} is negative and 0 otherwise",
        body,
        lambda v: (v > 0) - (v < 0),
        _one_arg(values),
    )


def _pair_inputs(rng: random.Random) -> list[list]:
    pairs = []
    for _ in range(4):
        a, b = _ints(rng, -20, 20, 2)
        pairs.append([a, b])
    pairs[0].sort()  # one pair in each order, so returning a fixed argument fails
    pairs[1].sort(reverse=True)
    return pairs


def _larger(rng: random.Random) -> _Task:
    a, b = rng.choice(_PAIR_PARAMS)
    return _Task(
        ("larger", "max_of_two", "bigger"),
        (a, b),
        f"returns the larger of {a} and {b}",
        f"return max({a}, {b})",
        max,
        _pair_inputs(rng),
    )


def _smaller(rng: random.Random) -> _Task:
    a, b = rng.choice(_PAIR_PARAMS)
    return _Task(
        ("smaller", "min_of_two", "lesser"),
        (a, b),
        f"returns the smaller of {a} and {b}",
        f"return min({a}, {b})",
        min,
        _pair_inputs(rng),
    )


# --- families: lists ------------------------------------------------------------------


def _list_sum(rng: random.Random) -> _Task:
    xs = rng.choice(_LIST_PARAMS)
    return _Task(
        ("total", "list_sum", "add_all"),
        (xs,),
        f"returns the sum of the numbers in {xs}",
        f"return sum({xs})",
        sum,
        _one_arg(_int_lists(rng)),
    )


def _list_max(rng: random.Random) -> _Task:
    xs = rng.choice(_LIST_PARAMS)
    return _Task(
        ("largest", "list_max", "biggest"),
        (xs,),
        f"returns the largest number in {xs}",
        f"return max({xs})",
        max,
        _one_arg(_int_lists(rng)),
    )


def _list_min(rng: random.Random) -> _Task:
    xs = rng.choice(_LIST_PARAMS)
    return _Task(
        ("smallest", "list_min", "lowest"),
        (xs,),
        f"returns the smallest number in {xs}",
        f"return min({xs})",
        min,
        _one_arg(_int_lists(rng)),
    )


def _list_length(rng: random.Random) -> _Task:
    xs = rng.choice(_LIST_PARAMS)
    return _Task(
        ("size", "count_items", "length"),
        (xs,),
        f"returns the number of items in {xs}",
        f"return len({xs})",
        len,
        _one_arg(_int_lists(rng)),
    )


def _list_reverse(rng: random.Random) -> _Task:
    xs = rng.choice(_LIST_PARAMS)
    return _Task(
        ("reverse_list", "backwards", "reversed_items"),
        (xs,),
        f"returns the list {xs} in reverse order",
        f"return {xs}[::-1]",
        lambda v: v[::-1],
        _one_arg(_int_lists(rng)),
    )


def _list_first(rng: random.Random) -> _Task:
    xs = rng.choice(_LIST_PARAMS)
    return _Task(
        ("first", "head", "first_item"),
        (xs,),
        f"returns the first item of {xs}",
        f"return {xs}[0]",
        lambda v: v[0],
        _one_arg(_int_lists(rng)),
    )


def _list_last(rng: random.Random) -> _Task:
    xs = rng.choice(_LIST_PARAMS)
    return _Task(
        ("last", "tail_item", "last_item"),
        (xs,),
        f"returns the last item of {xs}",
        f"return {xs}[-1]",
        lambda v: v[-1],
        _one_arg(_int_lists(rng)),
    )


def _count_above(rng: random.Random) -> _Task:
    k, xs = rng.randint(0, 10), rng.choice(_LIST_PARAMS)
    return _Task(
        (f"count_above_{k}", "count_big", f"how_many_over_{k}"),
        (xs,),
        f"returns how many numbers in {xs} are greater than {k}",
        f"return len([v for v in {xs} if v > {k}])",
        lambda v: len([item for item in v if item > k]),
        _one_arg(_int_lists(rng)),
    )


def _scale_all(rng: random.Random) -> _Task:
    k, xs = rng.randint(2, 9), rng.choice(_LIST_PARAMS)
    return _Task(
        (f"times_{k}_all", "scale_all", f"multiply_each_by_{k}"),
        (xs,),
        f"returns a new list with every number in {xs} multiplied by {k}",
        f"return [v * {k} for v in {xs}]",
        lambda v: [item * k for item in v],
        _one_arg(_int_lists(rng)),
    )


def _list_sorted(rng: random.Random) -> _Task:
    xs = rng.choice(_LIST_PARAMS)
    return _Task(
        ("sort_numbers", "ascending", "in_order"),
        (xs,),
        f"returns the numbers in {xs} sorted from smallest to largest",
        f"return sorted({xs})",
        sorted,
        _one_arg(_int_lists(rng)),
    )


def _keep_even(rng: random.Random) -> _Task:
    xs = rng.choice(_LIST_PARAMS)
    return _Task(
        ("evens", "keep_even", "only_even"),
        (xs,),
        f"returns a list of the even numbers in {xs}",
        f"return [v for v in {xs} if v % 2 == 0]",
        lambda v: [item for item in v if item % 2 == 0],
        _one_arg(_int_lists(rng)),
    )


# --- families: strings ----------------------------------------------------------------


def _upper(rng: random.Random) -> _Task:
    s = rng.choice(_TEXT_PARAMS)
    return _Task(
        ("shout", "to_upper", "upper_case"),
        (s,),
        f"returns {s} in upper case",
        f"return {s}.upper()",
        str.upper,
        _one_arg(_texts(rng)),
    )


def _lower(rng: random.Random) -> _Task:
    s = rng.choice(_TEXT_PARAMS)
    values = [name.upper() for name in rng.sample(NAMES, 2)] + rng.sample(NAMES, 2)
    return _Task(
        ("whisper", "to_lower", "lower_case"),
        (s,),
        f"returns {s} in lower case",
        f"return {s}.lower()",
        str.lower,
        _one_arg(values),
    )


def _text_reverse(rng: random.Random) -> _Task:
    s = rng.choice(_TEXT_PARAMS)
    return _Task(
        ("reverse_text", "mirror", "backwards_text"),
        (s,),
        f"returns {s} reversed",
        f"return {s}[::-1]",
        lambda v: v[::-1],
        _one_arg(_texts(rng)),
    )


def _count_letter(rng: random.Random) -> _Task:
    s = rng.choice(_TEXT_PARAMS)
    words = _texts(rng)
    letter = rng.choice(words[0])  # at least one test has a non-zero count
    return _Task(
        (f"count_{letter}", "count_letter", f"number_of_{letter}"),
        (s,),
        f"returns how many times the letter '{letter}' appears in {s}",
        f'return {s}.count("{letter}")',
        lambda v: v.count(letter),
        _one_arg(words),
    )


def _concatenate(rng: random.Random) -> _Task:
    a, b = rng.choice(_TEXT_PAIR_PARAMS)
    inputs = [rng.sample(ALL_WORDS, 2) for _ in range(4)]
    return _Task(
        ("join_words", "concat", "glue"),
        (a, b),
        f"returns {a} and {b} joined together with nothing between them",
        f"return {a} + {b}",
        lambda u, v: u + v,
        inputs,
    )


def _add_suffix(rng: random.Random) -> _Task:
    s = rng.choice(_TEXT_PARAMS)
    suffix = rng.choice(("!", "?", "s", "ing", "ed", "er", "..."))
    return _Task(
        ("add_suffix", "append_end", "with_ending"),
        (s,),
        f'returns {s} followed by "{suffix}"',
        f'return {s} + "{suffix}"',
        lambda v: v + suffix,
        _one_arg(_texts(rng)),
    )


def _first_char(rng: random.Random) -> _Task:
    s = rng.choice(_TEXT_PARAMS)
    return _Task(
        ("first_letter", "initial", "first_char"),
        (s,),
        f"returns the first character of {s}",
        f"return {s}[0]",
        lambda v: v[0],
        _one_arg(_texts(rng)),
    )


def _last_char(rng: random.Random) -> _Task:
    s = rng.choice(_TEXT_PARAMS)
    return _Task(
        ("last_letter", "final_char", "last_char"),
        (s,),
        f"returns the last character of {s}",
        f"return {s}[-1]",
        lambda v: v[-1],
        _one_arg(_texts(rng)),
    )


def _text_length(rng: random.Random) -> _Task:
    s = rng.choice(_TEXT_PARAMS)
    return _Task(
        ("text_length", "count_chars", "size_of"),
        (s,),
        f"returns the number of characters in {s}",
        f"return len({s})",
        len,
        _one_arg(_texts(rng)),
    )


def _repeat_text(rng: random.Random) -> _Task:
    k, s = rng.randint(2, 5), rng.choice(_TEXT_PARAMS)
    return _Task(
        (f"repeat_{k}", "echo", f"say_{k}_times"),
        (s,),
        f"returns {s} repeated {k} times",
        f"return {s} * {k}",
        lambda v: v * k,
        _one_arg(_texts(rng)),
    )


def _starts_with(rng: random.Random) -> _Task:
    s = rng.choice(_TEXT_PARAMS)
    words = _texts(rng)
    letter = words[0][0]
    return _Task(
        (f"starts_with_{letter}", "starts_with", "begins_with"),
        (s,),
        f"returns True if {s} starts with the letter '{letter}', otherwise False",
        f'return {s}.startswith("{letter}")',
        lambda v: v.startswith(letter),
        _one_arg(words),
    )


FAMILIES = (
    _multiply, _add, _subtract, _square, _affine, _floor_divide, _remainder, _absolute,
    _is_even, _is_odd, _greater_than, _divisible, _sign, _larger, _smaller,
    _list_sum, _list_max, _list_min, _list_length, _list_reverse, _list_first, _list_last,
    _count_above, _scale_all, _list_sorted, _keep_even,
    _upper, _lower, _text_reverse, _count_letter, _concatenate, _add_suffix, _first_char,
    _last_char, _text_length, _repeat_text, _starts_with,
)  # fmt: skip


def _source(name: str, task: _Task) -> str:
    body = "\n".join(f"    {line}" for line in task.body.split("\n"))
    return f"def {name}({', '.join(task.params)}):\n{body}"


def _generate(rng: random.Random) -> tuple[Example, str]:
    """An example and the plain description of what its function returns."""
    task = rng.choice(FAMILIES)(rng)
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
