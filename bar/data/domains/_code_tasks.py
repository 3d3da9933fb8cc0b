"""The code domain's tasks: what a function to write is made of, how its test inputs are
drawn, and the task families on numbers (arithmetic, conditionals)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from bar.data.lexicon import ALL_WORDS

NUMBER_PARAMS = ("x", "n", "a", "num", "value")
PAIR_PARAMS = (("a", "b"), ("x", "y"), ("m", "n"), ("first", "second"))
LIST_PARAMS = ("xs", "nums", "values", "items", "numbers")
TEXT_PARAMS = ("s", "text", "word", "line")
TEXT_PAIR_PARAMS = (("a", "b"), ("s", "t"), ("left", "right"), ("first", "second"))


@dataclass(frozen=True)
class Task:
    names: tuple[str, ...]  # fitting function names; a generic one is sometimes used instead
    params: tuple[str, ...]
    description: str  # completes "... that {description}."
    body: str  # function body, unindented, lines joined by "\n"
    solve: Callable  # reference implementation, computes the expected test outputs
    inputs: list[list]  # argument lists of the tests


# --- test inputs ----------------------------------------------------------------------


def ints(rng: random.Random, low: int = -20, high: int = 20, count: int = 4) -> list[int]:
    return rng.sample(range(low, high + 1), count)


def int_lists(rng: random.Random, count: int = 4) -> list[list[int]]:
    return [[rng.randint(-9, 20) for _ in range(rng.randint(1, 5))] for _ in range(count)]


def texts(rng: random.Random, count: int = 4) -> list[str]:
    return rng.sample(ALL_WORDS, count)


def one_arg(values: list) -> list[list]:
    return [[value] for value in values]


# --- families: numbers ----------------------------------------------------------------


def _multiply(rng: random.Random) -> Task:
    k, x = rng.randint(2, 9), rng.choice(NUMBER_PARAMS)
    names = (f"times_{k}", f"multiply_by_{k}", "scale") + {2: ("double",), 3: ("triple",)}.get(k, ())
    return Task(names, (x,), f"returns {x} multiplied by {k}", f"return {x} * {k}", lambda v: v * k, one_arg(ints(rng)))


def _add(rng: random.Random) -> Task:
    k, x = rng.randint(1, 20), rng.choice(NUMBER_PARAMS)
    return Task(
        (f"add_{k}", f"plus_{k}", "increase"),
        (x,),
        f"returns {x} plus {k}",
        f"return {x} + {k}",
        lambda v: v + k,
        one_arg(ints(rng)),
    )


def _subtract(rng: random.Random) -> Task:
    k, x = rng.randint(1, 20), rng.choice(NUMBER_PARAMS)
    return Task(
        (f"minus_{k}", f"subtract_{k}", "decrease"),
        (x,),
        f"returns {x} minus {k}",
        f"return {x} - {k}",
        lambda v: v - k,
        one_arg(ints(rng)),
    )


def _square(rng: random.Random) -> Task:
    x = rng.choice(NUMBER_PARAMS)
    return Task(
        ("square", "squared"),
        (x,),
        f"returns the square of {x}",
        f"return {x} * {x}",
        lambda v: v * v,
        one_arg(ints(rng)),
    )


def _affine(rng: random.Random) -> Task:
    k, c, x = rng.randint(2, 9), rng.randint(1, 9), rng.choice(NUMBER_PARAMS)
    return Task(
        ("linear", "affine", f"times_{k}_plus_{c}"),
        (x,),
        f"returns {x} times {k} plus {c}",
        f"return {x} * {k} + {c}",
        lambda v: v * k + c,
        one_arg(ints(rng)),
    )


def _floor_divide(rng: random.Random) -> Task:
    k, x = rng.randint(2, 9), rng.choice(NUMBER_PARAMS)
    return Task(
        (f"div_{k}", f"divide_by_{k}", "split_evenly"),
        (x,),
        f"returns {x} divided by {k}, rounded down",
        f"return {x} // {k}",
        lambda v: v // k,
        one_arg(ints(rng, 0, 60)),
    )


def _remainder(rng: random.Random) -> Task:
    k, x = rng.randint(2, 9), rng.choice(NUMBER_PARAMS)
    return Task(
        (f"mod_{k}", "remainder", f"remainder_by_{k}"),
        (x,),
        f"returns the remainder of {x} divided by {k}",
        f"return {x} % {k}",
        lambda v: v % k,
        one_arg(ints(rng, 0, 60)),
    )


def _absolute(rng: random.Random) -> Task:
    x = rng.choice(NUMBER_PARAMS)
    values = ints(rng, -20, -1, 2) + ints(rng, 0, 20, 2)
    rng.shuffle(values)
    return Task(
        ("absolute", "magnitude", "distance_from_zero"),
        (x,),
        f"returns the absolute value of {x}",
        f"return abs({x})",
        abs,
        one_arg(values),
    )


# --- families: conditionals -----------------------------------------------------------


def _parity_inputs(rng: random.Random) -> list[list]:
    values = [2 * v for v in ints(rng, -10, 10, 2)] + [2 * v + 1 for v in ints(rng, -10, 10, 2)]
    rng.shuffle(values)
    return one_arg(values)


def _is_even(rng: random.Random) -> Task:
    x = rng.choice(NUMBER_PARAMS)
    return Task(
        ("is_even", "even", "check_even"),
        (x,),
        f"returns True if {x} is even, otherwise False",
        f"return {x} % 2 == 0",
        lambda v: v % 2 == 0,
        _parity_inputs(rng),
    )


def _is_odd(rng: random.Random) -> Task:
    x = rng.choice(NUMBER_PARAMS)
    return Task(
        ("is_odd", "odd", "check_odd"),
        (x,),
        f"returns True if {x} is odd, otherwise False",
        f"return {x} % 2 == 1",
        lambda v: v % 2 == 1,
        _parity_inputs(rng),
    )


def _greater_than(rng: random.Random) -> Task:
    k, x = rng.randint(0, 20), rng.choice(NUMBER_PARAMS)
    # k itself is a test input so `>=` fails where `>` is asked for.
    values = [k, k + rng.randint(1, 10), k - rng.randint(1, 10), k + rng.randint(11, 30)]
    rng.shuffle(values)
    return Task(
        (f"above_{k}", f"greater_than_{k}", "is_big"),
        (x,),
        f"returns True if {x} is greater than {k}, otherwise False",
        f"return {x} > {k}",
        lambda v: v > k,
        one_arg(values),
    )


def _divisible(rng: random.Random) -> Task:
    k, x = rng.randint(2, 9), rng.choice(NUMBER_PARAMS)
    values = [k * rng.randint(0, 9), k * rng.randint(1, 9) + rng.randint(1, k - 1)]
    values += ints(rng, 0, 60, 2)
    rng.shuffle(values)
    return Task(
        (f"divisible_by_{k}", f"is_multiple_of_{k}"),
        (x,),
        f"returns True if {x} is divisible by {k}, otherwise False",
        f"return {x} % {k} == 0",
        lambda v: v % k == 0,
        one_arg(values),
    )


def _sign(rng: random.Random) -> Task:
    x = rng.choice(NUMBER_PARAMS)
    values = [rng.randint(1, 30), -rng.randint(1, 30), 0, rng.randint(-30, 30)]
    rng.shuffle(values)
    body = f"if {x} > 0:\n    return 1\nif {x} < 0:\n    return -1\nreturn 0"
    return Task(
        ("sign", "signum", "sign_of"),
        (x,),
        f"returns 1 if {x} is positive, -1 if {x} is negative and 0 otherwise",
        body,
        lambda v: (v > 0) - (v < 0),
        one_arg(values),
    )


def pair_inputs(rng: random.Random) -> list[list]:
    pairs = []
    for _ in range(4):
        a, b = ints(rng, -20, 20, 2)
        pairs.append([a, b])
    pairs[0].sort()  # one pair in each order, so returning a fixed argument fails
    pairs[1].sort(reverse=True)
    return pairs


def _larger(rng: random.Random) -> Task:
    a, b = rng.choice(PAIR_PARAMS)
    return Task(
        ("larger", "max_of_two", "bigger"),
        (a, b),
        f"returns the larger of {a} and {b}",
        f"return max({a}, {b})",
        max,
        pair_inputs(rng),
    )


def _smaller(rng: random.Random) -> Task:
    a, b = rng.choice(PAIR_PARAMS)
    return Task(
        ("smaller", "min_of_two", "lesser"),
        (a, b),
        f"returns the smaller of {a} and {b}",
        f"return min({a}, {b})",
        min,
        pair_inputs(rng),
    )


NUMBER_FAMILIES = (
    _multiply,
    _add,
    _subtract,
    _square,
    _affine,
    _floor_divide,
    _remainder,
    _absolute,
    _is_even,
    _is_odd,
    _greater_than,
    _divisible,
    _sign,
    _larger,
    _smaller,
)
