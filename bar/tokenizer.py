"""The tokenizer: a byte-level BPE trained with HF `tokenizers`, saved as a `transformers` tokenizer.

Digits are split one per token (as in Llama) so arithmetic stays learnable at toy scale.
The chat format is ChatML, or the chat template of a user's base model that has one: every
example is rendered through the tokenizer's template (`prompt_ids`, `chat_ids`), and a reply
ends where the template ends an assistant turn (`turn_end`). `<tool_call>`/`</tool_call>` are
special tokens from the start, but the base and anchor data never contain them: the tool-use
expert must learn them (the reason BAR unfreezes embeddings in SFT).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

END_OF_TEXT = "<|endoftext|>"
PAD = "<|pad|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
TOOL_CALL_START, TOOL_CALL_END = "<tool_call>", "</tool_call>"

# ChatML; tool definitions in a system turn of their own, an assistant's tool calls as
# <tool_call>{"name":...,"arguments":...}</tool_call>, compact JSON as the tool-use domain writes them.
CHAT_TEMPLATE = (
    "{% if tools %}{{ '<|im_start|>system\n# Tools\n' }}{% for tool in tools %}{{ tool | tojson(separators=(',', ':')) }}{{ '\n' }}"
    "{% endfor %}{{ '<|im_end|>\n' }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + (message['content'] or '') }}"
    "{% for call in message['tool_calls'] or [] %}"
    "{{ '<tool_call>' + ({'name': call['function']['name'], 'arguments': call['function']['arguments']} | tojson(separators=(',', ':'))) + '</tool_call>' }}"
    "{% endfor %}{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


NAMED = [END_OF_TEXT, PAD, IM_START, IM_END, TOOL_CALL_START, TOOL_CALL_END]  # what the pipeline writes
STOPS = (IM_END, END_OF_TEXT)  # where a reply ends


def special_tokens(num_reserved: int) -> list[str]:
    return NAMED + [f"<|reserved_{i}|>" for i in range(num_reserved)]


def corpus(data_dir: Path) -> Iterator[str]:
    """What the tokenizer learns from: prepare_data's pre-training documents and the built-in
    domains' splits. Not a domain of the user's: adding one later must not change the tokenizer
    (and so every model after it)."""
    from bar.files import read_jsonl
    from bar.specs import DOMAINS

    yield from (r["text"] for r in read_jsonl(data_dir / "pretrain.jsonl"))
    for split in sorted(f for f in data_dir.glob("*/*.jsonl") if f.parent.name in DOMAINS):
        for r in read_jsonl(split):
            yield r["text"] if "text" in r else f"{r['prompt']}\n{r['response']}"


def train(texts: Iterable[str], vocab_size: int, min_frequency: int, num_reserved: int):
    """A `PreTrainedTokenizerFast` of at most `vocab_size` tokens (special tokens included)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = special_tokens(num_reserved)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=IM_END, pad_token=PAD)
    fast.add_special_tokens({"additional_special_tokens": specials})
    fast.chat_template = CHAT_TEMPLATE
    if len(fast) > vocab_size:
        raise ValueError(f"tokenizer has {len(fast)} tokens, more than vocab_size={vocab_size}")
    return fast


def saved_vocab(folder: Path) -> dict[str, int]:
    """Token -> id of a saved fast tokenizer (`tokenizer.json`), its added tokens included."""
    import json

    spec = json.loads((Path(folder) / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    pieces = dict(vocab) if isinstance(vocab, dict) else {p[0]: i for i, p in enumerate(vocab)}  # Unigram: a list
    return pieces | {a["content"]: a["id"] for a in spec.get("added_tokens", [])}


def saved_tokens(folder: Path) -> tuple[set[str], int]:
    """The tokens of a saved fast tokenizer (`tokenizer.json`) and its size (largest id + 1)."""
    vocab = saved_vocab(folder)
    return set(vocab), max(vocab.values(), default=-1) + 1


def missing_specials(tokens: set[str]) -> list[str]:
    """bar's special tokens a user's tokenizer (its `saved_tokens`) lacks: `adapt` adds them, in this order."""
    return [t for t in NAMED if t not in tokens]


def adapt(folder: str | Path):
    """A user's tokenizer made the pipeline's: bar's special tokens added where missing (new ids
    after its own), <|pad|> as padding, and its own chat template kept (bar's ChatML if it has
    none), whose turn end becomes the end-of-sequence token. The pipeline's data is rendered
    through that template; the anchor learns it."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(str(folder))
    missing = missing_specials(saved_tokens(Path(folder))[0])  # its own special tokens stay special
    tok.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
    tok.pad_token = PAD
    tok.chat_template = tok.chat_template or CHAT_TEMPLATE
    tok.eos_token = turn_end(tok)
    return tok


def load(path: str | Path):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast.from_pretrained(str(path))


def _messages(prompt: str | list[dict]) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def _render(tok, messages: list[dict], tools: list[dict] | None, asking: bool = False) -> str:
    return tok.apply_chat_template(messages, tools=tools or None, tokenize=False, add_generation_prompt=asking)


def prompt_ids(tok, prompt: str | list[dict], tools: list[dict] | None = None) -> list[int]:
    """Token ids of a user turn (or of a conversation: messages, `tools` shown) followed by the
    assistant header: what the model continues."""
    return tok.encode(_render(tok, _messages(prompt), tools, asking=True), add_special_tokens=False)


def example_ids(tok, e) -> tuple[list[int], list[bool]]:
    """`chat_ids` of a `bar.data.Example`."""
    return chat_ids(tok, e.asked, e.response, e.tools, last_turn_only=e.last_turn_only)


def example_items(tok, examples: list, seq_length: int) -> list[tuple[int, tuple[list[int], list[bool]]]]:
    """(index, `example_ids`) of each example whose conversation fits a packed row (seq_length + 1
    tokens); one longer is left out with a warning naming its row, never cut: a cut reply would
    train without its turn end. The tokenizer stage refuses them unless their domain skips bad
    rows (`bar.data.prepare.check_lengths`)."""
    import warnings

    kept = []
    for i, e in enumerate(examples):
        ids = example_ids(tok, e)
        if problem := too_long(e, len(ids[0]), seq_length):
            warnings.warn(f"{problem}: left out", stacklevel=2)
        else:
            kept.append((i, ids))
    return kept


def too_long(e, n: int, seq_length: int, where: str = "") -> str | None:
    """What is wrong with example `e` of `n` tokens (ids with its reply) in rows of seq_length + 1
    tokens, naming its row (`e.source`, else `where`); None if it fits."""
    if n <= seq_length + 1:
        return None
    return (
        f"{e.source or where or e.domain}: the conversation with its reply is {n} tokens, more than the "
        f"{seq_length + 1} a training row holds (model.seq_length + 1)"
    )


def chat_ids(
    tok, prompt: str | list[dict], response: str, tools: list[dict] | None = None, last_turn_only: bool = False
) -> tuple[list[int], list[bool]]:
    """A supervised chat example (a user turn, or a conversation, and the assistant's `response`):
    ids and which of them are trained: every assistant turn (or the last only), each up to the
    token that ends it (what the template writes after the last one is left out). Each turn is
    told apart by rendering the conversation up to it with and without the generation prompt."""
    messages = [*_messages(prompt), {"role": "assistant", "content": response}]
    end = tok.convert_tokens_to_ids(turn_end(tok))
    turns = [j for j, m in enumerate(messages) if m["role"] == "assistant"]
    ids, trained, done = [], [], ""
    for j in turns:
        asked, whole = _render(tok, messages[:j], tools, asking=True), _render(tok, messages[: j + 1], tools)
        if not asked.startswith(done):
            raise ValueError(
                "the tokenizer's chat template renders a conversation's earlier turns differently once it goes "
                f"on ({done[-40:]!r} is not how {asked[len(done) - 40 : len(done) + 20]!r} goes on), so its "
                "assistant tokens cannot be told apart; bar needs a template whose turns extend the conversation"
            )
        head = tok.encode(asked[len(done) :], add_special_tokens=False)
        reply = tok.encode(_continued(asked, whole), add_special_tokens=False)
        if end not in reply:
            raise ValueError(f"the chat template writes assistant turn {j} without its turn end {turn_end(tok)!r}")
        cut = reply.index(end) + 1
        kept = reply if j != turns[-1] else reply[:cut]
        ids += head + kept
        train = not last_turn_only or j == turns[-1]
        trained += [False] * len(head) + [train] * cut + [False] * (len(kept) - cut)
        done = whole
    return ids, trained


def _continued(asked: str, whole: str) -> str:
    """What `whole` (a conversation rendered with the assistant's turn) writes after `asked` (the
    same up to that turn, with the generation prompt)."""
    if not whole.startswith(asked):
        raise ValueError(
            "the tokenizer's chat template writes an assistant turn that does not continue its generation "
            f"prompt ({asked[-40:]!r} is not how {whole[len(asked) - 40 : len(asked) + 20]!r} goes on), so "
            "its reply tokens cannot be told apart; bar needs a template whose turns extend the prompt"
        )
    return whole[len(asked) :]


def _reply(tok, prompt: str, response: str) -> str:
    """What the chat template writes for the assistant's `response` after the generation prompt."""
    user = [{"role": "user", "content": prompt}]
    return _continued(
        _render(tok, user, None, asking=True), _render(tok, [*user, {"role": "assistant", "content": response}], None)
    )


def turn_end(tok) -> str:
    """The special token that ends an assistant turn under the tokenizer's chat template:
    <|im_end|> in ChatML, e.g. <|endoftext|> (the eos) in OLMo 2's, <|eot_id|> in Llama 3's."""
    if not hasattr(tok, "_bar_turn_end"):
        marker = "\u2063bar\u2063"
        after = _reply(tok, "?", marker).split(marker, 1)[1]
        specials = set(tok.all_special_ids) | set(tok.added_tokens_decoder)
        ends = [i for i in tok.encode(after, add_special_tokens=False) if i in specials]
        if not ends:
            raise ValueError(
                f"the tokenizer's chat template ends an assistant turn with {after!r}, no special token: "
                "bar needs one to stop a reply at"
            )
        tok._bar_turn_end = tok.convert_ids_to_tokens(ends[0])
    return tok._bar_turn_end


def document_ids(tok, text: str) -> tuple[list[int], list[bool]]:
    """A language-modelling document: every token is trained, ended by <|endoftext|>."""
    ids = tok.encode(text, add_special_tokens=False) + [tok.convert_tokens_to_ids(END_OF_TEXT)]
    return ids, [True] * len(ids)


def stop_tokens(tok) -> list[str]:
    """Where a reply ends: the chat template's turn end, and bar's (`STOPS`)."""
    return list(dict.fromkeys([turn_end(tok), *STOPS]))


def stop_ids(tok) -> set[int]:
    return {tok.convert_tokens_to_ids(t) for t in stop_tokens(tok)}


def keep_in_decode(folder: Path, stops: list[str]) -> None:
    """Mark every added token of a saved `tokenizer.json` but the `stops` as not special, so that
    `decode(ids, skip_special_tokens=True)` (lm-eval's, most clients') drops what
    `decode_response` drops and keeps the tool-call markers the tool-use verifier looks for
    (transformers still drops <|pad|>, the pad token, which a greedy reply practically never holds).
    Encoding is unchanged: added tokens are matched whole either way."""
    import json

    path = Path(folder) / "tokenizer.json"
    spec = json.loads(path.read_text())
    for added in spec.get("added_tokens", []):
        added["special"] = added["content"] in stops
    path.write_text(json.dumps(spec, ensure_ascii=False, indent=2))


def decode_response(tok, ids: list[int]) -> str:
    """The assistant's text: special tokens kept (tool calls are special), the end marker dropped."""
    stops = stop_ids(tok)
    return tok.decode([i for i in ids if i not in stops], skip_special_tokens=False)
