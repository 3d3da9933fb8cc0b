import json

import pytest

from bar.data import DataError, Example, load_documents, load_examples, verify


def _write_jsonl(path, lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


GOOD_ROWS = [
    {"prompt": "What is 2 + 3?", "response": "2 + 3 = 5. The answer is 5.", "check": {"answer": 5}},
    {"prompt": "Name a fruit.", "response": "pear", "id": 17},  # extra keys are ignored
    {
        "messages": [
            {"role": "user", "content": "What is 4 * 2?"},
            {"role": "assistant", "content": "The answer is 8."},
        ],
        "check": {"answer": 8},
    },
]


def test_jsonl_rows_become_examples(tmp_path):
    path = _write_jsonl(tmp_path / "data.jsonl", [GOOD_ROWS[0], "", GOOD_ROWS[1], GOOD_ROWS[2]])
    loaded = load_examples(str(path), "math")
    assert loaded == [
        Example("math", "What is 2 + 3?", "2 + 3 = 5. The answer is 5.", {"answer": 5}),
        Example("math", "Name a fruit.", "pear", {"response": "pear"}),  # default: exact match
        Example("math", "What is 4 * 2?", "The answer is 8.", {"answer": 8}),
    ]
    assert all(verify("math", ex.response, ex.check) for ex in loaded)
    assert not verify("math", "apple", loaded[1].check)


@pytest.mark.parametrize(
    ("bad_line", "expected"),
    [
        ("{not json", "not valid JSON"),
        ('["a list"]', "must be an object, got list"),
        ({"response": "x"}, 'missing key "prompt"'),
        ({"prompt": "x"}, 'missing key "response"'),
        ({"prompt": 42, "response": "x"}, '"prompt" must be a non-empty string, got 42'),
        ({"prompt": "x", "response": ""}, '"response" must be a non-empty string'),
        ({"prompt": "x", "response": "y", "check": [1]}, '"check" must be an object'),
        ({"prompt": "x", "response": "y", "check": {"answer": "5"}}, 'bad "check"'),
        ({"prompt": "x", "messages": []}, 'both "prompt" and "messages"'),
        ({"messages": [{"role": "user", "content": "hi"}]}, "the last message must be the assistant's reply"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, 'messages[0]: unknown role "robot"'),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]},
            "messages[1]: a system message after the first",
        ),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "tool", "content": "21"}]},
            "messages[1]: a tool result without a tool call before it",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "a"},
                    {"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {}}}]},
                    {"role": "assistant", "content": "b"},
                ]
            },
            "messages[2]: 1 tool call(s) still wait for a result at this assistant message",
        ),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "tool_calls": [{"name": "f"}]}]},
            "a tool call must name a function and its arguments",
        ),
        ({"messages": [{"role": "system", "content": "s"}, {"role": "assistant", "content": "b"}]}, "no user message"),
        ({"prompt": "x", "response": "y", "tools": {"name": "f"}}, '"tools" must be a list of tool definitions'),
        (
            {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant"}]},
            'messages[1]: missing key "content"',
        ),
    ],
)
def test_bad_row_names_file_line_problem_and_fix(tmp_path, bad_line, expected):
    path = _write_jsonl(tmp_path / "data.jsonl", [GOOD_ROWS[0], bad_line, GOOD_ROWS[1]])
    with pytest.raises(DataError) as error:
        load_examples(path, "math")
    message = str(error.value)
    assert message.startswith(f"{path}:2")
    assert expected in message
    assert "Fix:" in message
    assert isinstance(error.value, ValueError)


def test_skip_bad_rows_warns_with_the_same_message(tmp_path):
    path = _write_jsonl(tmp_path / "data.jsonl", [GOOD_ROWS[0], "{oops", GOOD_ROWS[1], {"prompt": 1}])
    with pytest.warns(UserWarning) as caught:
        loaded = load_examples(path, "math", skip_bad_rows=True)
    assert [ex.prompt for ex in loaded] == ["What is 2 + 3?", "Name a fruit."]
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2
    assert messages[0].startswith(f"{path}:2: not valid JSON")
    assert messages[1].startswith(f"{path}:4:")


def test_checks_are_validated_for_the_domain(tmp_path):
    rows = [
        {"prompt": "Call it.", "response": "x", "check": {"name": "get_time", "arguments": {"city": "Oslo"}}},
        {"prompt": "Refuse?", "response": "x", "check": {"harmful": True}},
    ]
    path = _write_jsonl(tmp_path / "data.jsonl", rows)
    with pytest.raises(DataError, match=r":2: .*harmful"):
        load_examples(path, "tool_use")
    assert len(load_examples(_write_jsonl(tmp_path / "one.jsonl", rows[1:]), "safety")) == 1
    # A domain without a verifier accepts only exact-match checks.
    plain = _write_jsonl(tmp_path / "plain.jsonl", [GOOD_ROWS[1]])
    assert load_examples(plain, "medicine")[0].domain == "medicine"
    with pytest.raises(DataError, match="no verifier"):
        load_examples(path, "medicine")


def test_missing_and_empty_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_examples(tmp_path / "nope.jsonl", "math")
    with pytest.raises(DataError, match="no usable rows"):
        load_examples(_write_jsonl(tmp_path / "empty.jsonl", [""]), "math")


def test_saved_dataset_directory(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [
        {"prompt": "What is 2 + 3?", "response": "The answer is 5.", "check": json.dumps({"answer": 5})},
        {"prompt": "Say hi.", "response": "hi", "check": None},
    ]
    directory = tmp_path / "saved"
    datasets.Dataset.from_list(rows).save_to_disk(str(directory))
    loaded = load_examples(directory, "math")
    assert loaded == [
        Example("math", "What is 2 + 3?", "The answer is 5.", {"answer": 5}),
        Example("math", "Say hi.", "hi", {"response": "hi"}),
    ]
    # Struct checks with different keys per row: the dataset fills missing keys with None.
    mixed = [
        {"prompt": "Count: a b", "response": "2", "check": {"kind": "number", "answer": 2}},
        {"prompt": "Say yes.", "response": "yes", "check": {"kind": "yes_no", "answer2": "x"}},
        {"prompt": "", "response": "x", "check": {"kind": "words", "answer": None}},
    ]
    mixed_dir = tmp_path / "mixed"
    datasets.Dataset.from_list(mixed).save_to_disk(str(mixed_dir))
    with pytest.raises(DataError) as error:
        load_examples(mixed_dir, "general")
    assert str(error.value).startswith(f'{mixed_dir}[row 1]: bad "check"')
    with pytest.warns(UserWarning) as caught:
        loaded = load_examples(mixed_dir, "general", skip_bad_rows=True)
    assert [str(w.message).split(":")[0] for w in caught] == [f"{mixed_dir}[row 1]", f"{mixed_dir}[row 2]"]
    assert '"prompt" must be a non-empty string' in str(caught[1].message)
    assert loaded == [Example("general", "Count: a b", "2", {"kind": "number", "answer": 2})]
    # Chat-format rows load from a dataset too.
    chat_dir = tmp_path / "chat"
    datasets.Dataset.from_list([{"messages": GOOD_ROWS[2]["messages"]}]).save_to_disk(str(chat_dir))
    assert load_examples(chat_dir, "math")[0].prompt == "What is 4 * 2?"


def test_dataset_dict_directory_is_a_clear_error(tmp_path):
    datasets = pytest.importorskip("datasets")
    directory = tmp_path / "dict"
    data = datasets.Dataset.from_list([{"prompt": "a", "response": "b"}])
    datasets.DatasetDict({"train": data}).save_to_disk(str(directory))
    with pytest.raises(DataError, match="point at one split's directory"):
        load_examples(directory, "general")
    assert len(load_examples(directory / "train", "general")) == 1


def test_plain_directory_is_not_a_dataset(tmp_path):
    pytest.importorskip("datasets")
    with pytest.raises(DataError, match="not a dataset saved with"):
        load_examples(tmp_path, "general")


def test_load_documents_from_jsonl_and_dataset(tmp_path):
    path = _write_jsonl(tmp_path / "text.jsonl", [{"text": "A cat is an animal."}, {"text": "7 * 3 = 21."}])
    assert load_documents(path) == ["A cat is an animal.", "7 * 3 = 21."]
    bad = _write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok"}, {"body": "no"}])
    with pytest.raises(DataError, match=r'bad\.jsonl:2: missing key "text".*Fix: each row must be \{"text"'):
        load_documents(bad)
    with pytest.warns(UserWarning, match=":2:"):
        assert load_documents(bad, skip_bad_rows=True) == ["ok"]
    datasets = pytest.importorskip("datasets")
    directory = tmp_path / "saved_text"
    datasets.Dataset.from_list([{"text": "one"}, {"text": "two"}]).save_to_disk(str(directory))
    assert load_documents(directory) == ["one", "two"]


CONVERSATION = {
    "messages": [
        {"role": "system", "content": "You answer with the weather tool."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [{"type": "function", "function": {"name": "weather", "arguments": {"city": "Paris"}}}],
        },
        {"role": "tool", "content": '{"temp": 21}'},
        {"role": "assistant", "content": "It is 21 degrees."},
        {"role": "user", "content": "And in Rome?"},
        {"role": "assistant", "content": "Let me check."},
    ],
    "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
}


def test_a_conversation_with_a_system_prompt_tool_calls_and_results_becomes_one_example(tmp_path):
    single_turn = {"messages": GOOD_ROWS[2]["messages"]}
    path = _write_jsonl(tmp_path / "chat.jsonl", [CONVERSATION, single_turn])
    multi, single = load_examples(path, "tool_use")
    assert (multi.prompt, multi.response, multi.check) == (
        "And in Rome?",
        "Let me check.",
        {"response": "Let me check."},
    )
    assert multi.conversation == CONVERSATION["messages"][:-1] and multi.tools == CONVERSATION["tools"]
    assert multi.asked == multi.conversation
    assert Example.from_json(multi.to_json()) == multi
    # Each example names the row it came from, so a later stage can name it too.
    assert (multi.source, Example.from_json(single.to_json()).source) == (f"{path}:1", f"{path}:2")
    # One user turn stays the plain example it always was (the same JSON but for its row).
    assert single.conversation == [] and single.asked == [{"role": "user", "content": "What is 4 * 2?"}]
    assert set(single.to_json()) == {"domain", "prompt", "response", "check", "source"}
