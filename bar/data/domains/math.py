"""math: arithmetic and one-/two-step word problems with a final integer answer.

Every reference answer shows its steps as equations and ends with "The answer is N.";
the verifier only reads the last integer of the response (check = {"answer": N}).
"""

from __future__ import annotations

import random

from bar.data.domains._common import instruction_document, is_int, last_integer, train_samples
from bar.data.example import Example
from bar.data.lexicon import NAMES

DOMAIN = "math"

ITEMS = (
    "apples",
    "pears",
    "marbles",
    "books",
    "pencils",
    "stickers",
    "coins",
    "cookies",
    "cards",
    "shells",
    "stamps",
    "balloons",
    "eggs",
    "cupcakes",
    "buttons",
)


def _example(prompt: str, steps: list[str], answer: int) -> Example:
    response = " ".join(f"{step}." for step in steps) + f" The answer is {answer}."
    return Example(DOMAIN, prompt, response, {"answer": answer})


def _two_names(rng: random.Random) -> tuple[str, str]:
    first, second = rng.sample(NAMES, 2)
    return first, second


# --- bare arithmetic ------------------------------------------------------------------


def _add(rng: random.Random) -> Example:
    a, b = rng.randint(1, 60), rng.randint(1, 40)
    template = rng.choice(("What is {a} + {b}?", "Compute {a} + {b}.", "What is {a} plus {b}?", "Add {a} and {b}."))
    return _example(template.format(a=a, b=b), [f"{a} + {b} = {a + b}"], a + b)


def _subtract(rng: random.Random) -> Example:
    a = rng.randint(10, 99)
    b = rng.randint(1, a)
    template = rng.choice(
        ("What is {a} - {b}?", "Compute {a} - {b}.", "What is {a} minus {b}?", "Subtract {b} from {a}.")
    )
    return _example(template.format(a=a, b=b), [f"{a} - {b} = {a - b}"], a - b)


def _multiply(rng: random.Random) -> Example:
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    template = rng.choice(
        ("What is {a} * {b}?", "Compute {a} * {b}.", "What is {a} times {b}?", "Multiply {a} by {b}.")
    )
    return _example(template.format(a=a, b=b), [f"{a} * {b} = {a * b}"], a * b)


def _add_then_subtract(rng: random.Random) -> Example:
    a, b = rng.randint(2, 50), rng.randint(1, 30)
    c = rng.randint(1, a + b)
    template = rng.choice(("What is {a} + {b} - {c}?", "Compute {a} + {b} - {c}."))
    total = a + b
    steps = [f"{a} + {b} = {total}", f"{total} - {c} = {total - c}"]
    return _example(template.format(a=a, b=b, c=c), steps, total - c)


# --- word problems --------------------------------------------------------------------


def _word_add(rng: random.Random) -> Example:
    name, _ = _two_names(rng)
    item = rng.choice(ITEMS)
    a, b = rng.randint(2, 50), rng.randint(1, 30)
    template = rng.choice(
        (
            "{n} has {a} {i} and buys {b} more. How many {i} does {n} have now?",
            "{n} had {a} {i}. Then {n} found {b} more. How many {i} does {n} have?",
            "A box has {a} {i}. {n} puts in {b} more. How many {i} are in the box?",
        )
    )
    prompt = template.format(n=name, a=a, b=b, i=item)
    return _example(prompt, [f"{a} + {b} = {a + b}"], a + b)


def _word_subtract(rng: random.Random) -> Example:
    name, friend = _two_names(rng)
    item = rng.choice(ITEMS)
    a = rng.randint(5, 60)
    b = rng.randint(1, a)
    template = rng.choice(
        (
            "{n} has {a} {i} and gives {b} to {f}. How many {i} does {n} have left?",
            "{n} had {a} {i} and lost {b} of them. How many {i} are left?",
            "There are {a} {i} in a bag. {n} takes out {b}. How many {i} are still in the bag?",
        )
    )
    prompt = template.format(n=name, f=friend, a=a, b=b, i=item)
    return _example(prompt, [f"{a} - {b} = {a - b}"], a - b)


def _word_multiply(rng: random.Random) -> Example:
    name, _ = _two_names(rng)
    item = rng.choice(ITEMS)
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    template = rng.choice(
        (
            "{n} buys {a} bags with {b} {i} in each bag. How many {i} does {n} buy?",
            "There are {a} boxes with {b} {i} in each box. How many {i} are there in total?",
        )
    )
    prompt = template.format(n=name, a=a, b=b, i=item)
    return _example(prompt, [f"{a} * {b} = {a * b}"], a * b)


def _word_buy_then_give(rng: random.Random) -> Example:
    name, friend = _two_names(rng)
    item = rng.choice(ITEMS)
    a, b = rng.randint(2, 40), rng.randint(1, 30)
    c = rng.randint(1, a + b)
    prompt = (
        f"{name} has {a} {item}, buys {b} more and then gives {c} to {friend}. How many {item} does {name} have now?"
    )
    total = a + b
    return _example(prompt, [f"{a} + {b} = {total}", f"{total} - {c} = {total - c}"], total - c)


def _word_packs_then_eat(rng: random.Random) -> Example:
    name, _ = _two_names(rng)
    item = rng.choice(ITEMS)
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    c = rng.randint(1, a * b)
    prompt = f"{name} buys {a} packs of {b} {item} and gives away {c}. How many {item} does {name} keep?"
    total = a * b
    return _example(prompt, [f"{a} * {b} = {total}", f"{total} - {c} = {total - c}"], total - c)


def _word_more_than(rng: random.Random) -> Example:
    name, friend = _two_names(rng)
    item = rng.choice(ITEMS)
    a, b = rng.randint(2, 40), rng.randint(1, 20)
    prompt = f"{name} has {a} {item}. {friend} has {b} more than {name}. How many {item} do they have together?"
    other = a + b
    return _example(prompt, [f"{a} + {b} = {other}", f"{a} + {other} = {a + other}"], a + other)


FAMILIES = (
    _add,
    _subtract,
    _multiply,
    _add_then_subtract,
    _word_add,
    _word_subtract,
    _word_multiply,
    _word_buy_then_give,
    _word_packs_then_eat,
    _word_more_than,
)


def sample(rng: random.Random) -> Example:
    return rng.choice(FAMILIES)(rng)


# --- documents ------------------------------------------------------------------------


def _times_table(rng: random.Random) -> str:
    base = rng.randint(2, 12)
    return " ".join(f"{base} * {k} = {base * k}." for k in range(1, 11))


def _worked_sums(rng: random.Random) -> str:
    lines = []
    for _ in range(rng.randint(4, 8)):
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        op = rng.choice("+-")
        if op == "-" and b > a:
            a, b = b, a
        lines.append(f"{a} {op} {b} = {a + b if op == '+' else a - b}.")
    return " ".join(lines)


def document(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.6:
        pairs = train_samples(rng, sample, rng.randint(2, 4))
        return instruction_document(pairs, "Question", "Solution")
    if roll < 0.8:
        return _worked_sums(rng)
    return _times_table(rng)


# --- verification ---------------------------------------------------------------------


def verify(response: str, check: dict) -> bool:
    return last_integer(response) == check["answer"]


def check_problem(check: dict) -> str | None:
    if not is_int(check.get("answer")):
        return 'a math check needs "answer": an integer (the final answer)'
    return None
