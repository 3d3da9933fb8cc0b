"""The code domain's task families on lists and strings."""

from __future__ import annotations

import random

from bar.data.domains._code_tasks import LIST_PARAMS, TEXT_PAIR_PARAMS, TEXT_PARAMS, Task, int_lists, one_arg, texts
from bar.data.lexicon import ALL_WORDS, NAMES

# --- families: lists ------------------------------------------------------------------


def _list_sum(rng: random.Random) -> Task:
    xs = rng.choice(LIST_PARAMS)
    return Task(
        ("total", "list_sum", "add_all"),
        (xs,),
        f"returns the sum of the numbers in {xs}",
        f"return sum({xs})",
        sum,
        one_arg(int_lists(rng)),
    )


def _list_max(rng: random.Random) -> Task:
    xs = rng.choice(LIST_PARAMS)
    return Task(
        ("largest", "list_max", "biggest"),
        (xs,),
        f"returns the largest number in {xs}",
        f"return max({xs})",
        max,
        one_arg(int_lists(rng)),
    )


def _list_min(rng: random.Random) -> Task:
    xs = rng.choice(LIST_PARAMS)
    return Task(
        ("smallest", "list_min", "lowest"),
        (xs,),
        f"returns the smallest number in {xs}",
        f"return min({xs})",
        min,
        one_arg(int_lists(rng)),
    )


def _list_length(rng: random.Random) -> Task:
    xs = rng.choice(LIST_PARAMS)
    return Task(
        ("size", "count_items", "length"),
        (xs,),
        f"returns the number of items in {xs}",
        f"return len({xs})",
        len,
        one_arg(int_lists(rng)),
    )


def _list_reverse(rng: random.Random) -> Task:
    xs = rng.choice(LIST_PARAMS)
    return Task(
        ("reverse_list", "backwards", "reversed_items"),
        (xs,),
        f"returns the list {xs} in reverse order",
        f"return {xs}[::-1]",
        lambda v: v[::-1],
        one_arg(int_lists(rng)),
    )


def _list_first(rng: random.Random) -> Task:
    xs = rng.choice(LIST_PARAMS)
    return Task(
        ("first", "head", "first_item"),
        (xs,),
        f"returns the first item of {xs}",
        f"return {xs}[0]",
        lambda v: v[0],
        one_arg(int_lists(rng)),
    )


def _list_last(rng: random.Random) -> Task:
    xs = rng.choice(LIST_PARAMS)
    return Task(
        ("last", "tail_item", "last_item"),
        (xs,),
        f"returns the last item of {xs}",
        f"return {xs}[-1]",
        lambda v: v[-1],
        one_arg(int_lists(rng)),
    )


def _count_above(rng: random.Random) -> Task:
    k, xs = rng.randint(0, 10), rng.choice(LIST_PARAMS)
    return Task(
        (f"count_above_{k}", "count_big", f"how_many_over_{k}"),
        (xs,),
        f"returns how many numbers in {xs} are greater than {k}",
        f"return len([v for v in {xs} if v > {k}])",
        lambda v: len([item for item in v if item > k]),
        one_arg(int_lists(rng)),
    )


def _scale_all(rng: random.Random) -> Task:
    k, xs = rng.randint(2, 9), rng.choice(LIST_PARAMS)
    return Task(
        (f"times_{k}_all", "scale_all", f"multiply_each_by_{k}"),
        (xs,),
        f"returns a new list with every number in {xs} multiplied by {k}",
        f"return [v * {k} for v in {xs}]",
        lambda v: [item * k for item in v],
        one_arg(int_lists(rng)),
    )


def _list_sorted(rng: random.Random) -> Task:
    xs = rng.choice(LIST_PARAMS)
    return Task(
        ("sort_numbers", "ascending", "in_order"),
        (xs,),
        f"returns the numbers in {xs} sorted from smallest to largest",
        f"return sorted({xs})",
        sorted,
        one_arg(int_lists(rng)),
    )


def _keep_even(rng: random.Random) -> Task:
    xs = rng.choice(LIST_PARAMS)
    return Task(
        ("evens", "keep_even", "only_even"),
        (xs,),
        f"returns a list of the even numbers in {xs}",
        f"return [v for v in {xs} if v % 2 == 0]",
        lambda v: [item for item in v if item % 2 == 0],
        one_arg(int_lists(rng)),
    )


# --- families: strings ----------------------------------------------------------------


def _upper(rng: random.Random) -> Task:
    s = rng.choice(TEXT_PARAMS)
    return Task(
        ("shout", "to_upper", "upper_case"),
        (s,),
        f"returns {s} in upper case",
        f"return {s}.upper()",
        str.upper,
        one_arg(texts(rng)),
    )


def _lower(rng: random.Random) -> Task:
    s = rng.choice(TEXT_PARAMS)
    values = [name.upper() for name in rng.sample(NAMES, 2)] + rng.sample(NAMES, 2)
    return Task(
        ("whisper", "to_lower", "lower_case"),
        (s,),
        f"returns {s} in lower case",
        f"return {s}.lower()",
        str.lower,
        one_arg(values),
    )


def _text_reverse(rng: random.Random) -> Task:
    s = rng.choice(TEXT_PARAMS)
    return Task(
        ("reverse_text", "mirror", "backwards_text"),
        (s,),
        f"returns {s} reversed",
        f"return {s}[::-1]",
        lambda v: v[::-1],
        one_arg(texts(rng)),
    )


def _count_letter(rng: random.Random) -> Task:
    s = rng.choice(TEXT_PARAMS)
    words = texts(rng)
    letter = rng.choice(words[0])  # at least one test has a non-zero count
    return Task(
        (f"count_{letter}", "count_letter", f"number_of_{letter}"),
        (s,),
        f"returns how many times the letter '{letter}' appears in {s}",
        f'return {s}.count("{letter}")',
        lambda v: v.count(letter),
        one_arg(words),
    )


def _concatenate(rng: random.Random) -> Task:
    a, b = rng.choice(TEXT_PAIR_PARAMS)
    inputs = [rng.sample(ALL_WORDS, 2) for _ in range(4)]
    return Task(
        ("join_words", "concat", "glue"),
        (a, b),
        f"returns {a} and {b} joined together with nothing between them",
        f"return {a} + {b}",
        lambda u, v: u + v,
        inputs,
    )


def _add_suffix(rng: random.Random) -> Task:
    s = rng.choice(TEXT_PARAMS)
    suffix = rng.choice(("!", "?", "s", "ing", "ed", "er", "..."))
    return Task(
        ("add_suffix", "append_end", "with_ending"),
        (s,),
        f'returns {s} followed by "{suffix}"',
        f'return {s} + "{suffix}"',
        lambda v: v + suffix,
        one_arg(texts(rng)),
    )


def _first_char(rng: random.Random) -> Task:
    s = rng.choice(TEXT_PARAMS)
    return Task(
        ("first_letter", "initial", "first_char"),
        (s,),
        f"returns the first character of {s}",
        f"return {s}[0]",
        lambda v: v[0],
        one_arg(texts(rng)),
    )


def _last_char(rng: random.Random) -> Task:
    s = rng.choice(TEXT_PARAMS)
    return Task(
        ("last_letter", "final_char", "last_char"),
        (s,),
        f"returns the last character of {s}",
        f"return {s}[-1]",
        lambda v: v[-1],
        one_arg(texts(rng)),
    )


def _text_length(rng: random.Random) -> Task:
    s = rng.choice(TEXT_PARAMS)
    return Task(
        ("text_length", "count_chars", "size_of"),
        (s,),
        f"returns the number of characters in {s}",
        f"return len({s})",
        len,
        one_arg(texts(rng)),
    )


def _repeat_text(rng: random.Random) -> Task:
    k, s = rng.randint(2, 5), rng.choice(TEXT_PARAMS)
    return Task(
        (f"repeat_{k}", "echo", f"say_{k}_times"),
        (s,),
        f"returns {s} repeated {k} times",
        f"return {s} * {k}",
        lambda v: v * k,
        one_arg(texts(rng)),
    )


def _starts_with(rng: random.Random) -> Task:
    s = rng.choice(TEXT_PARAMS)
    words = texts(rng)
    letter = words[0][0]
    return Task(
        (f"starts_with_{letter}", "starts_with", "begins_with"),
        (s,),
        f"returns True if {s} starts with the letter '{letter}', otherwise False",
        f'return {s}.startswith("{letter}")',
        lambda v: v.startswith(letter),
        one_arg(words),
    )


SEQUENCE_FAMILIES = (
    _list_sum,
    _list_max,
    _list_min,
    _list_length,
    _list_reverse,
    _list_first,
    _list_last,
    _count_above,
    _scale_all,
    _list_sorted,
    _keep_even,
    _upper,
    _lower,
    _text_reverse,
    _count_letter,
    _concatenate,
    _add_suffix,
    _first_char,
    _last_char,
    _text_length,
    _repeat_text,
    _starts_with,
)
