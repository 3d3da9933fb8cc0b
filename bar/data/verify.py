"""Scoring a response against an example's check (the verifiable reward).

A built-in domain is scored by its module in bar.data.domains. A domain of the user's is scored
by exact match with the reference, or by the `verify(response, check)` of its verifier file
(`specs/data.yaml: domains.<name>.verifier`), which then scores every one of its checks;
prepare_data copies that file to outputs/prepare_data/<name>/verifier.py, where the later stages
find it (so that editing it re-runs what it scores).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from bar.data.domains import MODULES, code
from bar.files import output
from bar.specs import InputError

VERIFIER = "verifier.py"  # a user domain's verifier, as prepare_data publishes it
_chosen: dict[str, Path] = {}  # domain -> its verifier file, where prepare_data reads it
_loaded: dict[tuple[Path, int], ModuleType] = {}


def is_exact_check(check: dict) -> bool:
    """{"response": text}: the default check of user data, meaning "match the reference"."""
    return set(check) == {"response"} and isinstance(check["response"], str)


def _exact_match(response: str, expected: str) -> bool:
    # Whitespace differences (trailing newline, double spaces) are not content differences.
    return response.split() == expected.split()


def use_verifier(domain: str, path: str | Path) -> None:
    """Score the user's `domain` with the verifier file `path` in this process (prepare_data:
    its own output, where the other stages look, is not published yet)."""
    _chosen[domain] = Path(path)


def verifier_files() -> list[Path]:
    """The verifiers of the user's domains (prepare_data's copies): what rewards and scores depend on."""
    return sorted(output("prepare_data").glob(f"*/{VERIFIER}"))


def user_verifier(domain: str) -> ModuleType | None:
    """The verifier module of a domain of the user's, or None (exact match)."""
    if domain in MODULES:
        return None
    path = _chosen.get(domain) or output("prepare_data", domain, VERIFIER)
    if not path.is_file():
        return None
    key = (path.resolve(), path.stat().st_mtime_ns)
    if key not in _loaded:
        module = ModuleType(f"bar_verifier_{domain}")
        module.__file__ = str(path)
        try:  # compiled here, not imported: no __pycache__ appears inside a DVC output
            exec(compile(path.read_text(), str(path), "exec"), module.__dict__)
        except Exception as e:
            raise InputError(
                f"{path} (domain {domain!r}'s verifier): importing it failed: {type(e).__name__}: {e}; fix the file"
            ) from e
        _loaded[key] = module
    return _loaded[key]


def _user_verify(domain: str, module: ModuleType, response: str, check: dict) -> bool:
    try:
        ok = module.verify(response, check)
    except Exception as e:
        raise InputError(
            f"{module.__file__} (domain {domain!r}'s verifier): verify(response, check) raised "
            f"{type(e).__name__}: {e} on check {check!r} and response {response[:200]!r}; "
            f"make it return False for a reply it cannot score"
        ) from e
    if not isinstance(ok, bool):
        raise InputError(
            f"{module.__file__} (domain {domain!r}'s verifier): verify returned {ok!r} "
            f"({type(ok).__name__}); it must return True or False"
        )
    return ok


def verify(domain: str, response: str, check: dict) -> bool:
    if (module := user_verifier(domain)) is not None:
        return _user_verify(domain, module, response, check)
    if is_exact_check(check):
        return _exact_match(response, check["response"])
    if domain not in MODULES:
        raise ValueError(
            f"domain {domain!r} has no verifier; its checks must be exact matches "
            f'({{"response": ...}}), got keys {sorted(check)}'
        )
    return MODULES[domain].verify(response, check)


def verify_batch(domain: str, responses: list[str], checks: list[dict]) -> list[bool]:
    """verify() for many items; the code domain runs all its programs in one sandbox process."""
    if len(responses) != len(checks):
        raise ValueError(f"got {len(responses)} responses but {len(checks)} checks")
    if domain != "code":
        return [verify(domain, response, check) for response, check in zip(responses, checks)]
    results: list[bool | None] = [None] * len(responses)
    to_run = []
    for index, (response, check) in enumerate(zip(responses, checks)):
        if is_exact_check(check):
            results[index] = _exact_match(response, check["response"])
        else:
            to_run.append(index)
    passed = code.verify_batch([responses[i] for i in to_run], [checks[i] for i in to_run])
    for index, ok in zip(to_run, passed):
        results[index] = ok
    return results  # type: ignore[return-value]
