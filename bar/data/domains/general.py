"""general: short instruction following over the small world lexicon (the anchor's domain).

Checks (check["kind"]):
- "words": the response's words, lowercased and stripped of punctuation, equal check["words"];
- "exact": the response, whitespace-normalised and stripped of end punctuation/quotes, equals
  check["text"] case-sensitively (capitalisation instructions);
- "yes_no": the first word of the response is check["answer"] ("yes" or "no");
- "number": the last integer in the response equals check["answer"].
"""

from __future__ import annotations

import random
import re

from bar.data.domains._common import instruction_document, is_int, last_integer, train_samples
from bar.data.example import Example
from bar.data.lexicon import (
    ADJECTIVES,
    ALL_WORDS,
    CATEGORIES,
    CATEGORY_OF,
    CATEGORY_PHRASES,
    CATEGORY_PLURALS,
    NAMES,
    NUMBER_WORDS,
    PLACES,
    THINGS,
    VERBS,
    with_article,
)

DOMAIN = "general"
_WORD = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
_REST_VERBS = ("sleeps", "waits", "sits", "rests", "plays")


def _example(prompt: str, response: str, check: dict) -> Example:
    return Example(DOMAIN, prompt, response, check)


def _words_check(words: list[str]) -> dict:
    return {"kind": "words", "words": [word.lower() for word in words]}


def _distinct(rng: random.Random, count: int, pool=ALL_WORDS, distinct_initials=False) -> list[str]:
    chosen: list[str] = []
    while len(chosen) < count:
        word = rng.choice(pool)
        if word in chosen or (distinct_initials and any(word[0] == w[0] for w in chosen)):
            continue
        chosen.append(word)
    return chosen


def _sentence(rng: random.Random) -> str:
    """A sentence without end punctuation; several shapes so first/last words vary."""
    name, other = _distinct(rng, 2, NAMES)
    thing = rng.choice(THINGS)
    shape = rng.randrange(4)
    if shape == 0:
        return f"{name} {rng.choice(VERBS)} the {rng.choice(ADJECTIVES)} {thing} {rng.choice(PLACES)}"
    if shape == 1:
        return f"The {rng.choice(ADJECTIVES)} {thing} {rng.choice(_REST_VERBS)} {rng.choice(PLACES)}"
    if shape == 2:
        colour = rng.choice(CATEGORIES["colour"])
        return f"{name} has a {colour} {thing}"
    return f"{name} gives the {thing} to {other}"


# --- families -------------------------------------------------------------------------


def _repeat_word(rng: random.Random) -> Example:
    word, count = rng.choice(ALL_WORDS), rng.randint(2, 5)
    count_text = rng.choice((str(count), NUMBER_WORDS[count]))
    template = rng.choice(
        ("Repeat the word {w} {n} times.", "Write {w} {n} times.", "Say the word {w} exactly {n} times.")
    )
    words = [word] * count
    return _example(template.format(w=word, n=count_text), " ".join(words), _words_check(words))


def _change_case(rng: random.Random) -> Example:
    word = rng.choice(ALL_WORDS + NAMES)
    if rng.random() < 0.7:
        template = rng.choice(
            (
                "Write the word {w} in capital letters.",
                "Write {w} in uppercase.",
                "Spell {w} in capital letters.",
            )
        )
        prompt, answer = template.format(w=word), word.upper()
    else:
        template = rng.choice(("Write {w} in lowercase.", "Write the word {w} in small letters."))
        prompt, answer = template.format(w=word.upper()), word.lower()
    return _example(prompt, answer, {"kind": "exact", "text": answer})


def _alphabetical(rng: random.Random) -> Example:
    # Distinct first letters: ordering by the first letter is learnable by a tiny model.
    words = _distinct(rng, rng.randint(3, 4), distinct_initials=True)
    template = rng.choice(
        (
            "Put these words in alphabetical order: {l}.",
            "Sort these words alphabetically: {l}.",
            "List {l} in alphabetical order.",
        )
    )
    ordered = sorted(words)
    return _example(template.format(l=", ".join(words)), ", ".join(ordered), _words_check(ordered))


def _reverse_order(rng: random.Random) -> Example:
    words = _distinct(rng, rng.randint(3, 4))
    template = rng.choice(("Write these words in reverse order: {l}.", "Reverse the order of these words: {l}."))
    backwards = words[::-1]
    return _example(template.format(l=", ".join(words)), ", ".join(backwards), _words_check(backwards))


def _first_or_last_word(rng: random.Random) -> Example:
    text = _sentence(rng)
    position = rng.choice(("first", "last"))
    template = rng.choice(
        (
            'What is the {p} word of the sentence "{s}"?',
            'Give the {p} word of "{s}".',
            'Which word comes {p} in "{s}"?',
        )
    )
    word = text.split()[0 if position == "first" else -1]
    return _example(template.format(p=position, s=text), word, _words_check([word]))


def _category_yes_no(rng: random.Random) -> Example:
    word = rng.choice(ALL_WORDS)
    true_category = CATEGORY_OF[word]
    if rng.random() < 0.5:
        asked = true_category
    else:
        asked = rng.choice([c for c in CATEGORIES if c != true_category])
    template = rng.choice(("Is {w} {c}?", "Answer yes or no: is {w} {c}?", "Is it true that {w} is {c}?"))
    subject = with_article(word)
    prompt = template.format(w=subject, c=CATEGORY_PHRASES[asked])
    if asked == true_category:
        response, answer = f"Yes, {subject} is {CATEGORY_PHRASES[asked]}.", "yes"
    else:
        response, answer = f"No, {subject} is {CATEGORY_PHRASES[true_category]}.", "no"
    return _example(prompt, response, {"kind": "yes_no", "answer": answer})


def _pick_member(rng: random.Random) -> Example:
    target, *others = rng.sample(list(CATEGORIES), 3)
    member = rng.choice(CATEGORIES[target])
    options = [member] + [rng.choice(CATEGORIES[c]) for c in others]
    rng.shuffle(options)
    template = rng.choice(("Which of these is {c}: {l}?", "Which word names {c}: {l}?"))
    prompt = template.format(c=CATEGORY_PHRASES[target], l=", ".join(options))
    return _example(prompt, member, _words_check([member]))


def _odd_one_out(rng: random.Random) -> Example:
    group, odd_category = rng.sample(list(CATEGORIES), 2)
    options = _distinct(rng, 3, CATEGORIES[group])
    odd = rng.choice(CATEGORIES[odd_category])
    options.insert(rng.randrange(4), odd)
    template = rng.choice(("Which word does not belong: {l}?", "Find the odd one out: {l}."))
    return _example(template.format(l=", ".join(options)), odd, _words_check([odd]))


def _count_words(rng: random.Random) -> Example:
    count = rng.randint(2, 7)
    phrase = " ".join(rng.choice(ALL_WORDS) for _ in range(count))
    template = rng.choice(('How many words are in "{p}"?', 'Count the words in "{p}".'))
    return _example(template.format(p=phrase), f"There are {count} words.", {"kind": "number", "answer": count})


def _hyphenate(rng: random.Random) -> Example:
    first, second = _distinct(rng, 2)
    template = rng.choice(("Join {a} and {b} with a hyphen.", "Combine {a} and {b} into one word with a hyphen."))
    joined = f"{first}-{second}"
    return _example(template.format(a=first, b=second), joined, _words_check([joined]))


def _first_alphabetically(rng: random.Random) -> Example:
    first, second = _distinct(rng, 2, distinct_initials=True)
    template = rng.choice(
        (
            "Which comes first in alphabetical order, {a} or {b}?",
            "Which word is first alphabetically: {a} or {b}?",
        )
    )
    winner = min(first, second)
    return _example(template.format(a=first, b=second), winner, _words_check([winner]))


FAMILIES = (
    _repeat_word,
    _change_case,
    _alphabetical,
    _reverse_order,
    _first_or_last_word,
    _category_yes_no,
    _pick_member,
    _odd_one_out,
    _count_words,
    _hyphenate,
    _first_alphabetically,
)


def sample(rng: random.Random) -> Example:
    return rng.choice(FAMILIES)(rng)


# --- documents ------------------------------------------------------------------------


def _story(rng: random.Random) -> str:
    name, friend = _distinct(rng, 2, NAMES)
    animal = rng.choice(CATEGORIES["animal"])
    fruit = rng.choice(CATEGORIES["fruit"])
    colour = rng.choice(CATEGORIES["colour"])
    vehicle = rng.choice(CATEGORIES["vehicle"])
    instrument = rng.choice(CATEGORIES["instrument"])
    place = rng.choice(PLACES)
    adjective = rng.choice(ADJECTIVES)
    sentences = [
        f"{name} has a {adjective} {animal}.",
        f"Every day {name} and the {animal} walk {place}.",
        f"The {animal} likes to eat {with_article(fruit)}.",
        f"One day {name} meets {friend}, who plays the {instrument}.",
        f"{friend} rides a {colour} {vehicle} to town.",
        f"{name} says that {with_article(animal)} is {CATEGORY_PHRASES['animal']}.",
    ]
    start = rng.randrange(2)
    return " ".join(sentences[start : start + rng.randint(3, 5)])


def _facts(rng: random.Random) -> str:
    words = _distinct(rng, rng.randint(4, 6))
    lines = [f"{with_article(w).capitalize()} is {CATEGORY_PHRASES[CATEGORY_OF[w]]}." for w in words]
    category = rng.choice(list(CATEGORIES))
    members = ", ".join(rng.sample(CATEGORIES[category], 4))
    lines.append(f"Some {CATEGORY_PLURALS[category]} are {members}.")
    return " ".join(lines)


def document(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.5:
        pairs = train_samples(rng, sample, rng.randint(2, 4))
        return instruction_document(pairs, "Instruction", "Answer")
    if roll < 0.75:
        return _facts(rng)
    return _story(rng)


# --- verification ---------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _squash(text: str) -> str:
    return " ".join(text.split()).strip(" .!\"'`")


def verify(response: str, check: dict) -> bool:
    kind = check["kind"]
    if kind == "words":
        return _words(response) == [word.lower() for word in check["words"]]
    if kind == "exact":
        return _squash(response) == check["text"]
    if kind == "yes_no":
        words = _words(response)
        return bool(words) and words[0] == check["answer"]
    if kind == "number":
        return last_integer(response) == check["answer"]
    raise ValueError(f"general check has unknown kind {kind!r}")


def check_problem(check: dict) -> str | None:
    kind = check.get("kind")
    if kind == "words":
        words = check.get("words")
        if not (isinstance(words, list) and words and all(isinstance(w, str) for w in words)):
            return 'a "words" check needs "words": a non-empty list of strings'
    elif kind == "exact":
        if not isinstance(check.get("text"), str):
            return 'an "exact" check needs "text": a string'
    elif kind == "yes_no":
        if check.get("answer") not in ("yes", "no"):
            return 'a "yes_no" check needs "answer": "yes" or "no"'
    elif kind == "number":
        if not is_int(check.get("answer")):
            return 'a "number" check needs "answer": an integer'
    else:
        return f'"kind" must be one of "words", "exact", "yes_no", "number", got {kind!r}'
    return None
