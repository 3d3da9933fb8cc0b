"""The small world every synthetic domain talks about.

Words are lowercase, single tokens of text, and each belongs to exactly one category, so
category questions have one right answer. Countable nouns only, and none whose article
breaks the vowel rule ("a unicorn"), so "a"/"an" can be chosen mechanically.
"""

from __future__ import annotations

import random

CATEGORIES: dict[str, tuple[str, ...]] = {
    "animal": (
        "cat",
        "dog",
        "horse",
        "cow",
        "sheep",
        "goat",
        "pig",
        "duck",
        "owl",
        "fox",
        "wolf",
        "bear",
        "lion",
        "tiger",
        "rabbit",
        "mouse",
        "frog",
        "eagle",
        "shark",
        "whale",
        "snake",
        "zebra",
        "camel",
        "monkey",
        "deer",
        "otter",
        "crab",
        "bee",
    ),
    "fruit": (
        "apple",
        "banana",
        "pear",
        "plum",
        "peach",
        "cherry",
        "grape",
        "lemon",
        "lime",
        "mango",
        "melon",
        "orange",
        "kiwi",
        "fig",
        "apricot",
        "papaya",
        "coconut",
    ),
    "colour": (
        "red",
        "blue",
        "green",
        "yellow",
        "purple",
        "pink",
        "brown",
        "black",
        "white",
        "grey",
        "gold",
        "silver",
    ),
    "tool": (
        "hammer",
        "saw",
        "drill",
        "wrench",
        "shovel",
        "rake",
        "axe",
        "chisel",
        "ladder",
        "brush",
        "needle",
        "spanner",
        "screwdriver",
        "trowel",
    ),
    "vehicle": (
        "car",
        "bus",
        "train",
        "truck",
        "bike",
        "boat",
        "ship",
        "plane",
        "tram",
        "van",
        "taxi",
        "scooter",
        "tractor",
        "canoe",
        "rocket",
    ),
    "instrument": (
        "piano",
        "guitar",
        "violin",
        "drum",
        "flute",
        "harp",
        "trumpet",
        "cello",
        "banjo",
        "tuba",
        "oboe",
        "organ",
    ),
    "vegetable": (
        "carrot",
        "potato",
        "onion",
        "pea",
        "bean",
        "leek",
        "cabbage",
        "turnip",
        "radish",
        "pumpkin",
        "cucumber",
        "beetroot",
    ),
}

# How a category is named in a sentence ("Is a cat an animal?").
CATEGORY_PHRASES = {
    "animal": "an animal",
    "fruit": "a fruit",
    "colour": "a colour",
    "tool": "a tool",
    "vehicle": "a vehicle",
    "instrument": "a musical instrument",
    "vegetable": "a vegetable",
}

CATEGORY_PLURALS = {
    "animal": "animals",
    "fruit": "fruits",
    "colour": "colours",
    "tool": "tools",
    "vehicle": "vehicles",
    "instrument": "musical instruments",
    "vegetable": "vegetables",
}

# Things (not colours): the nouns a sentence can use with "the".
THINGS = tuple(word for category, words in CATEGORIES.items() if category != "colour" for word in words)
ALL_WORDS = tuple(word for words in CATEGORIES.values() for word in words)
CATEGORY_OF = {word: category for category, words in CATEGORIES.items() for word in words}

NAMES = (
    "Anna",
    "Ben",
    "Cara",
    "Dan",
    "Eva",
    "Finn",
    "Gina",
    "Hugo",
    "Ida",
    "Jack",
    "Kim",
    "Leo",
    "Mia",
    "Nina",
    "Omar",
    "Paul",
    "Rosa",
    "Sam",
    "Tara",
    "Umar",
    "Vera",
    "Will",
    "Yara",
    "Zoe",
    "Alex",
    "Bella",
    "Chris",
    "Dora",
    "Eli",
    "Fay",
    "Gus",
    "Hana",
    "Ivan",
    "Jade",
    "Kai",
    "Lily",
    "Max",
    "Nora",
    "Otto",
    "Pia",
)

CITIES = (
    "Oslo",
    "Paris",
    "Rome",
    "Madrid",
    "Berlin",
    "Vienna",
    "Lisbon",
    "Dublin",
    "Prague",
    "Warsaw",
    "Athens",
    "Cairo",
    "Tokyo",
    "Seoul",
    "Lima",
    "Quito",
    "Delhi",
    "Nairobi",
    "Toronto",
    "Sydney",
    "Boston",
    "Denver",
    "Chicago",
    "Miami",
    "Austin",
    "Seattle",
    "Bergen",
    "Porto",
    "Milan",
    "Munich",
)

ADJECTIVES = (
    "small",
    "big",
    "old",
    "young",
    "happy",
    "quiet",
    "fast",
    "slow",
    "tiny",
    "brave",
    "sleepy",
    "clever",
    "lazy",
    "hungry",
    "noisy",
    "shy",
)

VERBS = ("sees", "likes", "finds", "paints", "draws", "follows", "watches", "feeds", "hears")

PLACES = (
    "near the river",
    "in the garden",
    "on the hill",
    "by the lake",
    "in the barn",
    "at the market",
    "under the bridge",
    "behind the house",
    "in the park",
    "on the beach",
)

NUMBER_WORDS = {
    1: "one",
    2: "two",
    3: "three",
    4: "four",
    5: "five",
    6: "six",
    7: "seven",
    8: "eight",
    9: "nine",
    10: "ten",
}


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def with_article(word: str) -> str:
    """'an apple', 'a cat'; colours take no article ('red')."""
    if CATEGORY_OF.get(word) == "colour":
        return word
    return f"{article(word)} {word}"


def sentence(rng: random.Random) -> str:
    """A short sentence without final punctuation: 'Mia watches the sleepy fox by the lake'."""
    return (
        f"{rng.choice(NAMES)} {rng.choice(VERBS)} the {rng.choice(ADJECTIVES)} "
        f"{rng.choice(THINGS)} {rng.choice(PLACES)}"
    )
