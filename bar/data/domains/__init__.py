"""One module per domain, each with the same four functions:

- sample(rng) -> Example: one candidate example (examples() keeps the distinct ones of a split);
- document(rng) -> str: one plain-text pre-/mid-training document;
- verify(response, check) -> bool;
- check_problem(check) -> str | None: why a user-supplied check is unusable, or None.
"""

from types import ModuleType

from bar.data.domains import code, general, math, safety, tool_use

MODULES: dict[str, ModuleType] = {
    "general": general,
    "math": math,
    "code": code,
    "tool_use": tool_use,
    "safety": safety,
}
