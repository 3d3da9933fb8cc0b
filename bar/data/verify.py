"""Scoring a response against an example's check (the verifiable reward)."""

from __future__ import annotations

from bar.data.domains import MODULES, code


def is_exact_check(check: dict) -> bool:
    """{"response": text}: the default check of user data, meaning "match the reference"."""
    return set(check) == {"response"} and isinstance(check["response"], str)


def _exact_match(response: str, expected: str) -> bool:
    # Whitespace differences (trailing newline, double spaces) are not content differences.
    return response.split() == expected.split()


def verify(domain: str, response: str, check: dict) -> bool:
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
