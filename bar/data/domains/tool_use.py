"""tool_use: pick the right tool from a short JSON list and call it with the right arguments.

The prompt is "Tools: <JSON list of 2-3 schemas>" and the request on the next line; the
response is exactly one `<tool_call>{"name":...,"arguments":{...}}</tool_call>` span.
Schemas are compact ({"name", "parameters": {param: "string" | "integer" | [enum values]}})
because the prompt must stay short for a tiny model; all parameters are required and the
arguments keep the schema's parameter order. check = {"name": ..., "arguments": {...}}.
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Callable
from dataclasses import dataclass

from bar.data.example import TOOL_CALL_END, TOOL_CALL_START, Example
from bar.data.lexicon import CITIES, NAMES

DOMAIN = "tool_use"

_UNITS = ["celsius", "fahrenheit"]
_CURRENCIES = ["EUR", "GBP", "JPY", "NOK"]
_LANGUAGES = ["french", "german", "spanish", "italian"]
_CUISINES = ["italian", "thai", "indian", "mexican"]
_GENRES = ["jazz", "rock", "pop", "classical"]
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_SUBJECTS = ("Lunch", "Meeting notes", "Weekend plans", "Invoice", "Party", "Trip", "Hello")
_PHRASES = (
    "good morning",
    "thank you",
    "where is the station",
    "see you soon",
    "I like tea",
    "the cat is asleep",
    "how much is this",
    "happy birthday",
    "it is raining",
)
_TASKS = (
    "call mom",
    "buy milk",
    "water the plants",
    "pay rent",
    "walk the dog",
    "book a dentist visit",
    "send the report",
    "clean the kitchen",
    "buy bread",
)


@dataclass(frozen=True)
class _Tool:
    name: str
    parameters: dict  # param -> "string" | "integer" | list of allowed values
    summary: str  # one sentence for the API documentation documents
    requests: tuple[str, ...]  # {param}: the argument; {param_text}: capitalised ("French")
    values: Callable[[random.Random], dict]  # fresh argument values, in parameter order

    def schema(self) -> dict:
        return {"name": self.name, "parameters": self.parameters}


def _time(rng: random.Random) -> str:
    return f"{rng.randint(5, 11):02d}:{rng.randint(0, 59):02d}"


def _symbol(rng: random.Random) -> str:
    # Made-up tickers: fresh strings the model has to copy, not recall.
    return "".join(rng.choice(string.ascii_uppercase) for _ in range(rng.randint(3, 4)))


TOOLS = (
    _Tool(
        "get_weather", {"city": "string", "unit": _UNITS}, "returns the current weather in a city",
        ("What is the weather in {city} in {unit}?", "Tell me the weather in {city}, in {unit} please.",
         "How warm is it in {city}? Use {unit}."),
        lambda rng: {"city": rng.choice(CITIES), "unit": rng.choice(_UNITS)},
    ),
    _Tool(
        "set_alarm", {"time": "string"}, "sets an alarm at a time of day",
        ("Set an alarm for {time}.", "Wake me up at {time}.", "Please set an alarm at {time}."),
        lambda rng: {"time": _time(rng)},
    ),
    _Tool(
        "send_email", {"to": "string", "subject": "string"}, "sends an email to an address",
        ('Send an email to {to} with the subject "{subject}".',
         'Email {to} about "{subject}".', 'Write to {to}, subject "{subject}".'),
        lambda rng: {"to": f"{rng.choice(NAMES).lower()}@example.com", "subject": rng.choice(_SUBJECTS)},
    ),
    _Tool(
        "convert_currency", {"amount": "integer", "to": _CURRENCIES},
        "converts an amount of US dollars to another currency",
        ("Convert {amount} dollars to {to}.", "How much is {amount} USD in {to}?",
         "Change {amount} dollars into {to}."),
        lambda rng: {"amount": rng.randint(1, 500), "to": rng.choice(_CURRENCIES)},
    ),
    _Tool(
        "translate", {"text": "string", "language": _LANGUAGES}, "translates a short text",
        ('Translate "{text}" into {language_text}.', 'How do you say "{text}" in {language_text}?',
         'Say "{text}" in {language_text}.'),
        lambda rng: {"text": rng.choice(_PHRASES), "language": rng.choice(_LANGUAGES)},
    ),
    _Tool(
        "find_restaurant", {"city": "string", "cuisine": _CUISINES}, "finds a restaurant in a city",
        ("Find a {cuisine} restaurant in {city}.", "Where can I eat {cuisine} food in {city}?",
         "I want {cuisine} food in {city}."),
        lambda rng: {"city": rng.choice(CITIES), "cuisine": rng.choice(_CUISINES)},
    ),
    _Tool(
        "book_flight", {"origin": "string", "destination": "string", "passengers": "integer"},
        "books a flight between two cities",
        ("Book a flight from {origin} to {destination} for {passengers} people.",
         "I need {passengers} seats on a flight from {origin} to {destination}.",
         "Fly {passengers} of us from {origin} to {destination}."),
        lambda rng: dict(zip(("origin", "destination"), rng.sample(CITIES, 2)),
                         passengers=rng.randint(1, 6)),
    ),
    _Tool(
        "get_stock_price", {"symbol": "string"}, "returns the latest price of a stock",
        ("What is the stock price of {symbol}?", "How much does one {symbol} share cost?",
         "Get the price of {symbol} stock."),
        lambda rng: {"symbol": _symbol(rng)},
    ),
    _Tool(
        "play_music", {"genre": _GENRES, "volume": "integer"}, "plays music of a genre at a volume",
        ("Play some {genre} music at volume {volume}.", "Put on {genre} at volume {volume}.",
         "I want to hear {genre}, volume {volume}."),
        lambda rng: {"genre": rng.choice(_GENRES), "volume": rng.randint(1, 10)},
    ),
    _Tool(
        "create_reminder", {"task": "string", "day": "string"}, "creates a reminder for a day",
        ("Remind me to {task} on {day}.", "On {day}, remind me to {task}.",
         "Set a reminder to {task} on {day}."),
        lambda rng: {"task": rng.choice(_TASKS), "day": rng.choice(_DAYS)},
    ),
    _Tool(
        "calculate_tip", {"bill": "integer", "percent": "integer"}, "calculates the tip for a bill",
        ("What is a {percent} percent tip on a {bill} dollar bill?",
         "Calculate a {percent}% tip for {bill} dollars.", "How much tip is {percent}% of {bill}?"),
        lambda rng: {"bill": rng.randint(5, 300), "percent": rng.choice((10, 12, 15, 18, 20, 25))},
    ),
    _Tool(
        "get_time", {"city": "string"}, "returns the local time in a city",
        ("What time is it in {city}?", "Tell me the local time in {city}.",
         "What is the time in {city} now?"),
        lambda rng: {"city": rng.choice(CITIES)},
    ),
)  # fmt: skip


def compact_json(value: object) -> str:
    # No spaces after "," and ":": a third fewer tokens, which keeps prompts short; schemas
    # and calls share one style so the model sees the same JSON tokens in both.
    return json.dumps(value, separators=(",", ":"))


def tool_call(name: str, arguments: dict) -> str:
    """The reference call text: compact JSON, keys in schema order, between the special tokens."""
    return f"{TOOL_CALL_START}{compact_json({'name': name, 'arguments': arguments})}{TOOL_CALL_END}"


def _request(rng: random.Random, tool: _Tool, arguments: dict) -> str:
    spoken = {f"{key}_text": str(value).capitalize() for key, value in arguments.items()}
    return rng.choice(tool.requests).format(**arguments, **spoken)


def sample(rng: random.Random) -> Example:
    tool = rng.choice(TOOLS)
    # Mostly two tools: three schemas make the prompt long for a tiny model's context.
    distractors = rng.sample([t for t in TOOLS if t is not tool], 1 if rng.random() < 0.65 else 2)
    offered = [tool] + distractors
    rng.shuffle(offered)
    arguments = tool.values(rng)
    schemas = compact_json([t.schema() for t in offered])
    prompt = f"Tools: {schemas}\n{_request(rng, tool, arguments)}"
    check = {"name": tool.name, "arguments": arguments}
    return Example(DOMAIN, prompt, tool_call(tool.name, arguments), check)


# --- documents ------------------------------------------------------------------------


def _describe_parameter(name: str, kind: str | list) -> str:
    if isinstance(kind, list):
        return f"{name}, one of {', '.join(json.dumps(v) for v in kind)}"
    return f"{name}, {'an' if kind == 'integer' else 'a'} {kind}"


def document(rng: random.Random) -> str:
    """API documentation: what a tool does, its parameters, and a request with its call as
    plain JSON (without the special tokens, which only SFT data may contain)."""
    tool = rng.choice(TOOLS)
    params = [_describe_parameter(name, kind) for name, kind in tool.parameters.items()]
    lines = [
        f"The {tool.name} tool {tool.summary}.",
        f"Parameters: {'; '.join(params)}.",
        f"Schema: {compact_json(tool.schema())}",
    ]
    for _ in range(rng.randint(1, 2)):
        arguments = tool.values(rng)
        # A request alone is never a whole prompt (those start with "Tools:").
        lines.append(f"Example request: {_request(rng, tool, arguments)}")
        lines.append(f"Call: {compact_json({'name': tool.name, 'arguments': arguments})}")
    return "\n".join(lines)


# --- verification ---------------------------------------------------------------------


def parse_tool_call(response: str) -> dict | None:
    """The single call in a response, or None unless there is exactly one well-formed span
    whose JSON is an object with a string "name" and an object "arguments"."""
    if response.count(TOOL_CALL_START) != 1 or response.count(TOOL_CALL_END) != 1:
        return None
    start = response.index(TOOL_CALL_START) + len(TOOL_CALL_START)
    end = response.index(TOOL_CALL_END)
    if end < start:
        return None
    try:
        call = json.loads(response[start:end])
    except ValueError:
        return None
    if not (isinstance(call, dict) and isinstance(call.get("name"), str)):
        return None
    if not isinstance(call.get("arguments"), dict):
        return None
    return call


def verify(response: str, check: dict) -> bool:
    call = parse_tool_call(response)
    if call is None or call["name"] != check["name"]:
        return False
    # Compare as canonical JSON so 2 != "2" and 1 != true.
    canonical = [json.dumps(args, sort_keys=True) for args in (call["arguments"], check["arguments"])]
    return canonical[0] == canonical[1]


def check_problem(check: dict) -> str | None:
    if not isinstance(check.get("name"), str):
        return 'a tool_use check needs "name": the tool name (a string)'
    if not isinstance(check.get("arguments"), dict):
        return 'a tool_use check needs "arguments": an object of argument values'
    return None
