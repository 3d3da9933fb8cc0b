"""What the tokenizer learns from, and the chat format examples are rendered in."""

import json
import re

import pytest

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


def test_a_base_with_a_chat_template_keeps_it_and_replies_end_where_it_ends_a_turn(tmp_path):
    """An imported tokenizer's own chat format (OLMo 2's here): bar's special tokens are added,
    every example is rendered through the template, the reply is trained up to the token that ends
    the assistant's turn, and decoding stops there."""
    from transformers import PreTrainedTokenizerFast

    from bar import tokenizer
    from conftest import make_base

    folder = make_base(tmp_path / "olmo", layers=1, hidden=16, heads=2, kv_heads=1, ffn=32, chat_template=True)
    theirs = PreTrainedTokenizerFast.from_pretrained(str(folder))
    tok = tokenizer.adapt(folder)
    assert tok.chat_template == theirs.chat_template and tok.eos_token == "</s>"
    assert tokenizer.turn_end(tok) == "</s>" and tok.convert_tokens_to_ids("</s>") in tokenizer.stop_ids(tok)
    ids, trained = tokenizer.chat_ids(tok, "the old man", "a small boat")
    reply = tok.encode("a small boat", add_special_tokens=False)
    assert [i for i, t in zip(ids, trained) if t] == [*reply, tok.eos_token_id]
    specials = set(tok.all_special_ids)
    assert tok.convert_ids_to_tokens([i for i in ids if i in specials]) == ["<s>", "<|user|>", "<|assistant|>", "</s>"]
    asked = theirs.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert asked.endswith("<|assistant|>\n") and tokenizer.prompt_ids(tok, "Hi") == tok.encode(
        asked, add_special_tokens=False
    )
    assert tokenizer.decode_response(tok, [*reply, tok.eos_token_id]) == tok.decode(reply)
    # bar's own format for a base without a template: ChatML, a turn ends with <|im_end|>.
    plain = tokenizer.adapt(make_base(tmp_path / "llama", layers=1, hidden=16, heads=2, kv_heads=1, ffn=32))
    assert plain.chat_template == tokenizer.CHAT_TEMPLATE and tokenizer.turn_end(plain) == "<|im_end|>"


@pytest.mark.parametrize(
    "template,expected",
    [
        (
            "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n\\n' }}{% endfor %}"
            "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}",
            "ends an assistant turn with '\\n\\n', no special token",
        ),
        (
            "{% for m in messages %}{{ '<s>' + m['content'] }}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<s>Answer: ' }}{% endif %}",
            "does not continue its generation prompt",
        ),
    ],
)
def test_a_chat_template_bar_cannot_train_through_is_refused_saying_why(tmp_path, template, expected):
    from bar import tokenizer
    from conftest import make_base

    folder = make_base(tmp_path / "base", layers=1, hidden=16, heads=2, kv_heads=1, ffn=32)
    tok = tokenizer.load(folder)
    tok.chat_template = template
    with pytest.raises(ValueError, match=re.escape(expected)):
        tokenizer.chat_ids(tok, "Hi", "Hello")


def test_a_conversation_longer_than_a_training_row_is_refused_naming_its_row_or_left_out_whole(tmp_path):
    """Never cut: a cut reply would train without its turn end. The user's file:line travels with
    the row through prepare_data; the tokenizer stage refuses it before any training, or, with the
    domain's skip_bad_rows, the training stages leave it out whole."""
    from bar import tokenizer
    from bar.data import DataError, Example
    from bar.data.prepare import check_lengths, split_rows
    from bar.files import write_jsonl
    from bar.specs.declarations import DomainDataSpec

    tok = tokenizer.train(["the cat sat on the mat"] * 20, 300, 1, 0)
    user = tmp_path / "chat.jsonl"
    replies = ["the cat", "the cat sat on the mat " * 20, "the mat"]
    user.write_text("".join(json.dumps({"prompt": "where?", "response": r}) + "\n" for r in replies))
    rows = split_rows("safety", "sft", DomainDataSpec(files={"sft": str(user)}), 0)
    assert [r["source"] for r in rows] == [f"{user}:{n}" for n in (1, 2, 3)]
    examples = [Example.from_json(r) for r in rows]
    lengths = [len(tokenizer.example_ids(tok, e)[0]) for e in examples]
    seq_length = lengths[0] + 10  # rows 1 and 3 fit, row 2 does not
    assert lengths[1] > seq_length + 1 >= max(lengths[0], lengths[2])
    (tmp_path / "data" / "safety").mkdir(parents=True)
    write_jsonl(tmp_path / "data" / "safety" / "sft.jsonl", rows)

    message = f"{user}:2: the conversation with its reply is {lengths[1]} tokens, more than the {seq_length + 1}"
    with pytest.raises(DataError, match=re.escape(message) + r".*domains\.safety\.skip_bad_rows: true"):
        check_lengths(tok, tmp_path / "data", {"safety": False}, seq_length)
    assert check_lengths(tok, tmp_path / "data", {"safety": True}, seq_length) == 1
    with pytest.warns(UserWarning, match=re.escape(message)):
        kept = tokenizer.example_items(tok, examples, seq_length)
    assert kept == [(0, tokenizer.example_ids(tok, examples[0])), (2, tokenizer.example_ids(tok, examples[2]))]
    # Exactly a row's worth fits.
    assert [i for i, _ in tokenizer.example_items(tok, examples[:1], lengths[0] - 1)] == [0]
