"""The code domain's harder families: several steps (a chain of operations on a number, a filter,
a map and a sum or count over a list, the largest item under a bound, a clamp) and rules shown
only by examples. Each has six tests, edge cases among them (an empty list, a value on a bound,
no item that qualifies, inputs no example shows)."""

from __future__ import annotations

import random

from bar.data.domains._code_tasks import LIST_PARAMS, NUMBER_PARAMS, Task, ints, one_arg

# (what the description says, the expression on `v`, the function): one step of a number chain
_NUMBER_STEPS = (
    lambda k: (f"multiplies it by {k}", f"{{v}} * {k}", lambda v: v * k),
    lambda k: (f"adds {k}", f"{{v}} + {k}", lambda v: v + k),
    lambda k: (f"subtracts {k}", f"{{v}} - {k}", lambda v: v - k),
    lambda k: ("squares it", "{v} * {v}", lambda v: v * v),
    lambda k: (f"divides it by {k}, rounding down", f"{{v}} // {k}", lambda v: v // k),
    lambda k: (f"takes the remainder of dividing it by {k}", f"{{v}} % {k}", lambda v: v % k),
    lambda k: ("takes its absolute value", "abs({v})", abs),
)
# (how the description names the items that count, the condition on `v`, the function)
_FILTERS = (
    lambda k: ("even", "v % 2 == 0", lambda v: v % 2 == 0),
    lambda k: ("odd", "v % 2 == 1", lambda v: v % 2 == 1),
    lambda k: ("positive", "v > 0", lambda v: v > 0),
    lambda k: ("negative", "v < 0", lambda v: v < 0),
    lambda k: (f"greater than {k}", f"v > {k}", lambda v: v > k),
    lambda k: (f"divisible by {k}", f"v % {k} == 0", lambda v: v % k == 0),
)
# (the description's "the sum of ..." words, the expression on `v`, the function)
_MAPS = (
    lambda k: ("the numbers", "v", lambda v: v),
    lambda k: ("the squares of the numbers", "v * v", lambda v: v * v),
    lambda k: (f"{k} times the numbers", f"v * {k}", lambda v: v * k),
    lambda k: ("the absolute values of the numbers", "abs(v)", abs),
)


def _lists(rng: random.Random, count: int = 6) -> list[list[int]]:
    """Lists of -9..20 with the empty list among them."""
    lists = [[]] + [[rng.randint(-9, 20) for _ in range(rng.randint(1, 7))] for _ in range(count - 1)]
    rng.shuffle(lists)
    return lists


def _number_chain(rng: random.Random) -> Task:
    x, count = rng.choice(NUMBER_PARAMS), rng.randint(2, 3)
    steps = [step(rng.randint(2, 9)) for step in rng.sample(_NUMBER_STEPS, count)]
    said = ", then ".join(words for words, _, _ in steps)
    lines = [f"result = {steps[0][1].format(v=x)}"]
    lines += [f"result = {expr.format(v='result')}" for _, expr, _ in steps[1:]]

    def solve(v: int) -> int:
        for _, _, fn in steps:
            v = fn(v)
        return v

    return Task(
        ("steps", "pipeline", "chain", "process"),
        (x,),
        f"takes {x}, {said}, and returns the result",
        "\n".join(lines) + "\nreturn result",
        solve,
        one_arg(ints(rng, -20, 20, 6)),
    )


def _filter_sum(rng: random.Random) -> Task:
    xs = rng.choice(LIST_PARAMS)
    which, cond, keep = rng.choice(_FILTERS)(rng.randint(2, 9))
    what, expr, fn = rng.choice(_MAPS)(rng.randint(2, 9))
    return Task(
        ("sum_selected", "total_of", "filtered_sum"),
        (xs,),
        f"returns the sum of {what} in {xs} that are {which} (0 if there are none)",
        f"return sum({expr} for v in {xs} if {cond})",
        lambda items: sum(fn(v) for v in items if keep(v)),
        one_arg(_lists(rng)),
    )


def _filter_count(rng: random.Random) -> Task:
    xs = rng.choice(LIST_PARAMS)
    which, cond, keep = rng.choice(_FILTERS)(rng.randint(2, 9))
    return Task(
        ("count_selected", "how_many", "count_matching"),
        (xs,),
        f"returns how many numbers in {xs} are {which}",
        f"return len([v for v in {xs} if {cond}])",
        lambda items: len([v for v in items if keep(v)]),
        one_arg(_lists(rng)),
    )


def _largest_below(rng: random.Random) -> Task:
    k, xs = rng.randint(0, 12), rng.choice(LIST_PARAMS)
    lists = _lists(rng)
    lists[0] = [k, k + 1, k - 3]  # k itself must not count: "less than", not "at most"
    return Task(
        (f"largest_below_{k}", "best_under", "max_below"),
        (xs,),
        f"returns the largest number in {xs} that is less than {k}, or None if there is none",
        f"below = [v for v in {xs} if v < {k}]\nreturn max(below) if below else None",
        lambda items: max([v for v in items if v < k], default=None),
        one_arg(lists),
    )


def _clamp(rng: random.Random) -> Task:
    low = rng.randint(-10, 5)
    high = low + rng.randint(3, 15)
    x = rng.choice(NUMBER_PARAMS)
    values = [
        low,
        high,
        low - rng.randint(1, 9),
        high + rng.randint(1, 9),
        rng.randint(low, high),
        rng.randint(-30, 30),
    ]
    rng.shuffle(values)
    return Task(
        ("clamp", "limit", f"clamp_{low}_{high}".replace("-", "minus")),
        (x,),
        f"returns {x} limited to the range {low} to {high}: {low} if {x} is below it, {high} if above, else {x}",
        f"if {x} < {low}:\n    return {low}\nif {x} > {high}:\n    return {high}\nreturn {x}",
        lambda v: min(max(v, low), high),
        one_arg(values),
    )


STEP_FAMILIES = (_number_chain, _filter_sum, _filter_count, _largest_below, _clamp)


# --- families: a rule shown only by examples (the tests hold more) -----------------------


def _shown(pairs: list[tuple]) -> str:
    return ", ".join(f"{a!r} -> {b!r}" for a, b in pairs)


def _affine_by_example(rng: random.Random) -> Task:
    k, c, x = rng.randint(2, 9), rng.randint(1, 9), rng.choice(NUMBER_PARAMS)
    values = rng.sample(range(0, 10), 3) + rng.sample(range(10, 30), 3)
    shown = [(v, v * k + c) for v in values[:3]]
    return Task(
        ("rule", "from_examples", "fit", "pattern"),
        (x,),
        f"returns {x} times some whole number plus another, as these examples show: {_shown(shown)}",
        f"return {x} * {k} + {c}",
        lambda v: v * k + c,
        one_arg(values),
    )


def _scale_by_example(rng: random.Random) -> Task:
    k, xs = rng.randint(2, 9), rng.choice(LIST_PARAMS)
    lists = [[rng.randint(1, 9) for _ in range(rng.randint(1, 3))] for _ in range(2)] + _lists(rng, 4)
    shown = [(items, [v * k for v in items]) for items in lists[:2]]
    return Task(
        ("scale_like", "from_examples", "pattern_list"),
        (xs,),
        f"returns {xs} with every number multiplied by the same number, as these examples show: {_shown(shown)}",
        f"return [v * {k} for v in {xs}]",
        lambda items: [v * k for v in items],
        one_arg(lists),
    )


EXAMPLE_FAMILIES = (_affine_by_example, _scale_by_example)
