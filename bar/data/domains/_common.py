"""Helpers shared by the domain generators."""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from bar.data.example import Example, is_eval_prompt

Sampler = Callable[[random.Random], Example]

_INTEGER = re.compile(r"-?\d+")


def train_samples(rng: random.Random, sample: Sampler, count: int) -> list[Example]:
    """`count` generated examples whose prompts are in the train split. Documents are built
    only from these, so pre-training text never contains an eval prompt."""
    found: list[Example] = []
    while len(found) < count:
        example = sample(rng)
        if not is_eval_prompt(example.prompt):
            found.append(example)
    return found


def instruction_document(examples: list[Example], question: str, answer: str) -> str:
    """Plain-text instruction/answer pairs ('Instruction: ...\\nAnswer: ...'), no chat template."""
    return "\n\n".join(f"{question}: {ex.prompt}\n{answer}: {ex.response}" for ex in examples)


def last_integer(text: str) -> int | None:
    numbers = _INTEGER.findall(text)
    return int(numbers[-1]) if numbers else None


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
