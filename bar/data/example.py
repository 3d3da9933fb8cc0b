"""The unit of data every domain produces, and the rule that splits prompts into train and eval."""

from __future__ import annotations

import copy
import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

DOMAINS = ("general", "math", "code", "tool_use", "safety")
SPLITS = ("train", "eval")

# Special tokens of the tokenizer. They appear only in tool_use SFT/RL data, never in
# pre-/mid-training documents, so the base model has never seen them.
TOOL_CALL_START, TOOL_CALL_END = "<tool_call>", "</tool_call>"

# A prompt is in the eval split when the first byte of its sha256 is below this value
# (26 / 256 ~ 10%). Deciding by the prompt text alone means train and eval can never
# share a prompt, whatever n and seed the caller asks for.
_EVAL_BYTE_THRESHOLD = 26


@dataclass(frozen=True)
class Example:
    """One assistant reply, the conversation it answers, and what a verifier needs to score it."""

    domain: str
    prompt: str  # the (last) user message (tool_use: includes the tool schemas as JSON text)
    response: str  # the reference assistant message (SFT target)
    check: dict  # JSON-serialisable input of the domain's verifier
    # The messages the reply answers when they are more than one user turn (transformers' format:
    # system, user, assistant with `tool_calls`, tool), ending with the last user or tool message;
    # empty: the one user turn `prompt`.
    conversation: list = field(default_factory=list)
    tools: list = field(default_factory=list)  # tool definitions (JSON schemas) the chat template shows
    last_turn_only: bool = False  # SFT loss on the reply only, not on the conversation's earlier assistant turns
    source: str = field(default="", compare=False)  # the user's row it came from ("file:line"); "" if generated

    @property
    def asked(self) -> list[dict]:
        """The messages the reply answers."""
        return self.conversation or [{"role": "user", "content": self.prompt}]

    def to_json(self) -> dict:
        out = {
            "domain": self.domain,
            "prompt": self.prompt,
            "response": self.response,
            "check": copy.deepcopy(self.check),
        }
        if self.conversation:
            out["conversation"] = copy.deepcopy(self.conversation)
        if self.tools:
            out["tools"] = copy.deepcopy(self.tools)
        if self.last_turn_only:
            out["last_turn_only"] = True
        if self.source:
            out["source"] = self.source
        return out

    @classmethod
    def from_json(cls, obj: dict) -> Example:
        if not isinstance(obj, dict):
            raise ValueError(f"Example.from_json expects an object, got {type(obj).__name__}")
        expected = {"domain": str, "prompt": str, "response": str, "check": dict}
        for key, kind in expected.items():
            if not isinstance(obj.get(key), kind):
                raise ValueError(
                    f"Example.from_json: key {key!r} must be a {kind.__name__}, got {type(obj.get(key)).__name__}"
                )
        optional = {
            k: copy.deepcopy(obj[k]) for k in ("conversation", "tools", "last_turn_only", "source") if obj.get(k)
        }
        return cls(obj["domain"], obj["prompt"], obj["response"], copy.deepcopy(obj["check"]), **optional)


def is_eval_prompt(prompt: str) -> bool:
    """The split of a prompt: a stable hash of its text (independent of PYTHONHASHSEED)."""
    return hashlib.sha256(prompt.encode("utf-8")).digest()[0] < _EVAL_BYTE_THRESHOLD


def derived_rng(*parts: object) -> random.Random:
    """A generator seeded from a readable key, so each (purpose, domain, split, seed) gets
    its own stream; sha256 keeps it identical across processes and Python hash seeds."""
    key = "/".join(str(part) for part in parts).encode("utf-8")
    return random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))


def derived_seed(seed: int, *names: str) -> int:
    """Independent, reproducible seeds per (domain, split) of the pipeline's draws (prepare_data,
    mix_data, the router's sample): never Python's salted hash()."""
    digest = hashlib.sha256(":".join([str(seed), *names]).encode()).digest()
    return int.from_bytes(digest[:8], "big")


def read_examples(path: Path) -> list[Example]:
    """The examples of a JSONL file the pipeline wrote (prepare_data, mix_data)."""
    from bar.files import read_jsonl

    return [Example.from_json(r) for r in read_jsonl(path)]
