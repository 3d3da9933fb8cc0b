"""What the tokenizer learns from."""

import json

from bar.tokenizer import corpus


def test_the_tokenizer_learns_from_the_built_in_domains_only(tmp_path):
    """Adding a domain of the user's later must not change the tokenizer (and every model after it)."""
    for rel, row in {
        "pretrain.jsonl": {"text": "a document"},
        "math/sft.jsonl": {"prompt": "1+1?", "response": "2"},
        "reverse/sft.jsonl": {"prompt": "Spell 'kat' backwards.", "response": "tak"},
    }.items():
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_text(json.dumps(row) + "\n")
    assert list(corpus(tmp_path)) == ["a document", "1+1?\n2"]
