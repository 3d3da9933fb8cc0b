"""User data: a local JSONL file or a saved `datasets` dataset, read into Examples
(load_examples) or plain-text documents (load_documents, rows {"text": str}).

Both sources go through one function per kind of row (row_to_example). Example rows:

    {"prompt": str, "response": str, "check": {...}}          # check optional
    {"messages": [...], "tools": [...], "check": {...}}       # tools and check optional

"messages" is a conversation in transformers' format: an optional first "system" message, then
"user", "assistant" and "tool" messages; an assistant message may carry "tool_calls" ([{"type":
"function", "function": {"name": str, "arguments": {...}}}]) and each "tool" message answers a
call. The last message is the assistant's reply the example trains on and is scored against;
earlier assistant turns train too. "tools" are the tool definitions the chat template shows.

Without "check", the check is {"response": <response>}: an exact match (up to whitespace).
A null value counts as a missing key (a saved dataset stores absent columns as None).
Other keys (ids, sources, ...) are ignored.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn, TypeVar

from bar.data.domains import MODULES
from bar.data.example import Example
from bar.data.verify import is_exact_check, user_verifier
from bar.specs import InputError

TEXT_SCHEMA = 'each row must be {"text": "..."}'
ROW_SCHEMA = (
    'each row must be {"prompt": "...", "response": "...", "check": {...}} or '
    '{"messages": [{"role": "user", "content": "..."}, ..., {"role": "assistant", "content": "..."}], '
    '"tools": [...]} ("check" and "tools" are optional)'
)
ROLES = ("system", "user", "assistant", "tool")

T = TypeVar("T")


class DataError(InputError):
    """A row that cannot be used. The message names the row ("file:line" or "dir[row N]"),
    what is wrong and how to fix it."""


def load_examples(path: str | Path, domain: str, *, skip_bad_rows: bool = False) -> list[Example]:
    """Examples of `domain` from a JSONL file or a directory saved with
    `datasets.Dataset.save_to_disk`. A bad row raises DataError, or with skip_bad_rows=True
    is skipped with a warning carrying the same message."""

    def convert(row: object, where: str) -> Example:
        return row_to_example(row, domain, where)

    return _load(path, convert, skip_bad_rows, ROW_SCHEMA)


def load_documents(path: str | Path, *, skip_bad_rows: bool = False) -> list[str]:
    """Plain-text documents ({"text": str} rows) from the same two kinds of source, for
    user-supplied pre-/mid-training text."""
    return _load(path, _row_to_text, skip_bad_rows, TEXT_SCHEMA)


def _load(path: str | Path, convert: Callable[[object, str], T], skip_bad_rows: bool, schema: str) -> list[T]:
    """Rows of a JSONL file or a saved dataset through `convert`, with the bad-row policy."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such file or directory; expected a JSONL file or a directory "
            "saved with datasets.Dataset.save_to_disk"
        )
    found: list[T] = []
    for where, row in _dataset_rows(path) if path.is_dir() else _jsonl_rows(path):
        try:
            if isinstance(row, bytes):
                row = _parse_line(row, where, schema)
            found.append(convert(row, where))
        except DataError as error:
            if not skip_bad_rows:
                raise
            warnings.warn(str(error), stacklevel=3)  # points at the caller of load_*
    if not found:
        raise DataError(f"{path}: no usable rows. Fix: {schema}")
    return found


def _row_to_text(row: object, where: str) -> str:
    if not isinstance(row, dict):
        _fail(where, f"a row must be an object, got {type(row).__name__}", TEXT_SCHEMA)
    return _text(row, "text", where, TEXT_SCHEMA)


def row_to_example(row: object, domain: str, where: str) -> Example:
    """The one conversion from a user row to an Example (both sources use it)."""
    if not isinstance(row, dict):
        _fail(where, f"a row must be an object, got {type(row).__name__}")
    has_prompt, has_messages = row.get("prompt") is not None, row.get("messages") is not None
    if has_prompt and has_messages:
        _fail(where, 'the row has both "prompt" and "messages"; keep one')
    conversation, tools = [], row.get("tools") or []
    if has_messages:
        prompt, response, conversation = _from_messages(row["messages"], where)
    elif has_prompt:
        prompt, response = _text(row, "prompt", where), _text(row, "response", where)
    else:
        _fail(where, f'missing key "prompt" (or "messages"); the row has keys {sorted(row)}')
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        _fail(where, f'"tools" must be a list of tool definitions (objects), got {_show(tools)}')
    check = _check(row.get("check"), response, domain, where)
    return Example(domain, prompt, response, check, conversation, tools, source=where)


# --- sources --------------------------------------------------------------------------


def _jsonl_rows(path: Path) -> Iterator[tuple[str, bytes]]:
    # Lines stay bytes until parsed, so a bad encoding fails that line, not the whole file.
    for number, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        if line.strip():
            yield f"{path}:{number}", line


def _parse_line(line: bytes, where: str, schema: str) -> object:
    try:
        return json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        _fail(where, "the line is not UTF-8 text", "save the file as UTF-8")
    except json.JSONDecodeError as error:
        problem = f"not valid JSON ({error.msg}, column {error.colno})"
        _fail(where, problem, f"one JSON object per line; {schema}")


def _dataset_rows(path: Path) -> Iterator[tuple[str, dict]]:
    import datasets  # heavy: only users of saved datasets pay for the import

    try:
        data = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as error:
        raise DataError(
            f"{path}: a directory, but not a dataset saved with datasets.Dataset.save_to_disk "
            f"({error}). Fix: point at a JSONL file or at a save_to_disk directory"
        ) from None
    if isinstance(data, datasets.DatasetDict):
        raise DataError(
            f"{path}: a DatasetDict with splits {list(data)}, not one Dataset. "
            f"Fix: point at one split's directory, e.g. {path / next(iter(data))}"
        )
    for index, row in enumerate(data):
        yield f"{path}[row {index}]", row


# --- fields ---------------------------------------------------------------------------


def _fail(where: str, problem: str, fix: str = ROW_SCHEMA) -> NoReturn:
    raise DataError(f"{where}: {problem}. Fix: {fix}")


def _text(row: dict, key: str, where: str, schema: str = ROW_SCHEMA) -> str:
    value = row.get(key)
    if value is None:
        _fail(where, f'missing key "{key}"; the row has keys {sorted(row)}', schema)
    if not isinstance(value, str) or not value.strip():
        _fail(where, f'"{key}" must be a non-empty string, got {_show(value)}', schema)
    return value


def _from_messages(messages: object, where: str) -> tuple[str, str, list[dict]]:
    """(the last user message, the reply, the messages before the reply; [] for one user turn)."""
    shape = '"messages" must be a list of {"role": ..., "content": ...} ending with the assistant\'s reply'
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages) or not messages:
        _fail(where, f'"messages" must be a non-empty list of objects, got {_show(messages)}', shape)
    calls = 0  # tool calls not yet answered
    for i, m in enumerate(messages):
        at, role = f"{where} messages[{i}]", m.get("role")
        if role not in ROLES:
            _fail(at, f"unknown role {_show(role)}", f"a role is one of {', '.join(ROLES)}")
        if role == "system" and i:
            _fail(at, "a system message after the first", "put the system message first, once")
        if role == "tool":
            if not calls:
                _fail(at, "a tool result without a tool call before it", "answer an assistant message's tool_calls")
            calls -= 1
        elif calls:
            _fail(
                at,
                f"{calls} tool call(s) still wait for a result at this {role} message",
                "add a tool message per call",
            )
        if role == "assistant" and m.get("tool_calls"):
            calls = _tool_calls(m["tool_calls"], at)
            if m.get("content") is not None and not isinstance(m.get("content"), str):
                _fail(at, f'"content" must be a string, got {_show(m.get("content"))}')
        elif role != "tool" or not isinstance(m.get("content"), str):
            _text(m, "content", at)
    *asked, reply = messages
    if reply.get("role") != "assistant" or reply.get("tool_calls"):
        _fail(where, "the last message must be the assistant's reply (text, no tool calls)", shape)
    users = [m for m in asked if m["role"] == "user"]
    if not users:
        _fail(where, "no user message", shape)
    response = _text(reply, "content", f"{where} messages[{len(messages) - 1}]")
    conversation = [] if [m["role"] for m in asked] == ["user"] and set(asked[0]) <= {"role", "content"} else asked
    return users[-1]["content"], response, conversation


def _tool_calls(calls: object, where: str) -> int:
    fix = '"tool_calls": [{"type": "function", "function": {"name": "...", "arguments": {...}}}]'
    if not isinstance(calls, list):
        _fail(where, f'"tool_calls" must be a list, got {_show(calls)}', fix)
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(fn, dict)
            or not isinstance(fn.get("name"), str)
            or not isinstance(fn.get("arguments"), (dict, str))
        ):
            _fail(where, f"a tool call must name a function and its arguments, got {_show(call)}", fix)
    return len(calls)


def _check(value: object, response: str, domain: str, where: str) -> dict:
    if value is None:
        value = {"response": response}
    if isinstance(value, str):  # a JSON string: how a saved dataset can hold varying checks
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            problem = f'"check" is a string but not JSON: {_show(value)}'
            _fail(where, problem, 'give "check" as an object')
    if not isinstance(value, dict):
        problem = f'"check" must be an object, got {_show(value)}'
        _fail(where, problem, 'give "check" as an object or omit it')
    # A saved dataset merges the keys of all rows' checks into one struct, filling the
    # missing ones with None; dropping None values restores each row's own check.
    check = {key: item for key, item in value.items() if item is not None}
    user = user_verifier(domain)  # a domain of the user's with a verifier file: it scores every check
    if user is None and is_exact_check(check):
        return check
    module = user or MODULES.get(domain)
    if module is None:
        _fail(
            where,
            f"domain {domain!r} has no verifier, so its checks can only be exact matches",
            'omit "check" or give {"response": "..."}, or give the domain a verifier '
            "(specs/data.yaml: domains.<name>.verifier)",
        )
    problem = module.check_problem(check) if hasattr(module, "check_problem") else None
    if problem:
        fix = "fix the row" if user else 'omit "check" for an exact match'
        _fail(where, f'bad "check" {_show(check)} for domain {domain!r}', f"{problem}, or {fix}")
    return check


def _show(value: object) -> str:
    text = json.dumps(value) if isinstance(value, (dict, list, str, int, float, bool)) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
