"""Synthetic, verifiable data for the five domains, and loaders for user data.

Everything is generated from a seed (same seed -> identical output, whatever
PYTHONHASHSEED), with a train/eval split fixed by a hash of each prompt's text:

    examples("math", "train", 1000, seed=0)   # chat pairs with checks (SFT, RL prompts)
    examples("math", "eval", 200, seed=0)     # held-out prompts, never in train
    documents("math", 500, seed=0)            # plain text for pre-/mid-training
    verify("math", "12 + 5 = 17. The answer is 17.", {"answer": 17})  # -> True
    load_examples("my_data.jsonl", "math")    # user data, same Example type
    load_documents("my_text.jsonl")           # user text, rows {"text": ...}
"""

from bar.data.example import DOMAINS, TOOL_CALL_END, TOOL_CALL_START, Example
from bar.data.loaders import DataError, load_documents, load_examples
from bar.data.synth import documents, examples
from bar.data.verify import VERIFIER, use_verifier, verify, verify_batch

__all__ = [
    "VERIFIER",
    "DOMAINS",
    "TOOL_CALL_END",
    "TOOL_CALL_START",
    "DataError",
    "Example",
    "documents",
    "examples",
    "load_documents",
    "load_examples",
    "use_verifier",
    "verify",
    "verify_batch",
]
