import os

import pytest

from bar.data import TOOL_CALL_END, TOOL_CALL_START, verify, verify_batch

# --- general --------------------------------------------------------------------------

REPEAT = {"kind": "words", "words": ["owl", "owl", "owl"]}
ORDER = {"kind": "words", "words": ["apple", "drum", "zebra"]}
UPPER = {"kind": "exact", "text": "BANANA"}
YES = {"kind": "yes_no", "answer": "yes"}
COUNT = {"kind": "number", "answer": 5}


@pytest.mark.parametrize(
    ("response", "check", "ok"),
    [
        ("owl owl owl", REPEAT, True),
        ("Owl, owl, owl.", REPEAT, True),  # case and punctuation are free here
        ("owl owl", REPEAT, False),  # one short
        ("owl owl owl owl", REPEAT, False),
        ("Here: owl owl owl", REPEAT, False),  # extra words break the constraint
        ("apple, drum, zebra", ORDER, True),
        ("apple, zebra, drum", ORDER, False),
        ("BANANA", UPPER, True),
        ("BANANA.", UPPER, True),
        ("Banana", UPPER, False),  # the instruction is about case
        ("BANANAS", UPPER, False),
        ("Yes, a cat is an animal.", YES, True),
        ("No, a cat is an animal.", YES, False),
        ("", YES, False),
        ("There are 5 words.", COUNT, True),
        ("There are 6 words.", COUNT, False),
        ("five", COUNT, False),
    ],
)
def test_general(response, check, ok):
    assert verify("general", response, check) is ok


# --- math -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "ok"),
    [
        ("23 + 58 = 81. The answer is 81.", True),
        ("81", True),
        ("23 + 58 = 81. The answer is 82.", False),  # the last integer counts
        ("The answer is 80, no wait, 81", True),
        ("The answer is 81.5", False),
        ("I do not know.", False),
        ("", False),
    ],
)
def test_math(response, ok):
    assert verify("math", response, {"answer": 81}) is ok


def test_math_negative_answer():
    assert verify("math", "5 - 8 = -3. The answer is -3.", {"answer": -3})
    assert not verify("math", "5 - 8 = 3. The answer is 3.", {"answer": -3})


# --- code -----------------------------------------------------------------------------

TRIPLE = {"entry": "triple", "tests": [[[2], 6], [[0], 0], [[-4], -12]]}
ABSOLUTE = {"entry": "absolute", "tests": [[[3], 3], [[0], 0], [[-5], 5]]}
IS_EVEN = {"entry": "is_even", "tests": [[[2], True], [[3], False], [[0], True]]}


@pytest.mark.parametrize(
    ("response", "check", "ok"),
    [
        ("def triple(x):\n    return x * 3", TRIPLE, True),
        ("```python\ndef triple(x):\n    return x * 3\n```", TRIPLE, True),
        ("Here you go:\n```\ndef triple(x):\n    return 3 * x\n```\nDone.", TRIPLE, True),
        ("def triple(x):\n    return x + x + x", TRIPLE, True),
        ("```python\ndef triple(x):\n    return x * 3\n", TRIPLE, True),  # cut off before the fence closed
        ("def triple(x):\n    return x * 2", TRIPLE, False),
        ("def thrice(x):\n    return x * 3", TRIPLE, False),  # wrong entry name
        ("def triple(x):\n    return x * 3.0", TRIPLE, False),  # 6.0 is not 6
        ("def triple(x)\n    return x * 3", TRIPLE, False),  # syntax error
        ("def triple(x):\n    raise ValueError", TRIPLE, False),
        ("def absolute(x):\n    return x", ABSOLUTE, False),  # wrong on one test only
        ("def absolute(x):\n    return x if x > 0 else -x", ABSOLUTE, True),
        ("def is_even(n):\n    return n % 2 == 0", IS_EVEN, True),
        ("def is_even(n):\n    return 1 - n % 2", IS_EVEN, False),  # 1 is not True
        ("", TRIPLE, False),
    ],
)
def test_code(response, check, ok):
    assert verify("code", response, check) is ok


def test_code_batch_matches_single_verification():
    responses = [
        "def triple(x):\n    return x * 3",
        "def triple(x):\n    return x * 4",
        "def absolute(x):\n    return abs(x)",
        "def absolute(x):\n    return absolute(x)",  # RecursionError
        "exact text",
    ]
    checks = [TRIPLE, TRIPLE, ABSOLUTE, ABSOLUTE, {"response": "exact  text"}]
    expected = [True, False, True, False, True]
    assert verify_batch("code", responses, checks) == expected
    assert [verify("code", r, c) for r, c in zip(responses, checks)] == expected


# --- tool_use -------------------------------------------------------------------------

WEATHER = {"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}
CALL = '{"name":"get_weather","arguments":{"city":"Oslo","unit":"celsius"}}'


def _wrap(body: str) -> str:
    return f"{TOOL_CALL_START}{body}{TOOL_CALL_END}"


@pytest.mark.parametrize(
    ("response", "ok"),
    [
        (_wrap(CALL), True),
        (_wrap('{"name": "get_weather", "arguments": {"unit": "celsius", "city": "Oslo"}}'), True),
        ("Let me check. " + _wrap(CALL), True),
        (_wrap(CALL) + _wrap(CALL), False),  # an extra call
        (CALL, False),  # no special tokens
        (f"{TOOL_CALL_START}{CALL}", False),  # unclosed
        (f"{TOOL_CALL_END}{CALL}{TOOL_CALL_START}", False),  # tokens in the wrong order
        (_wrap(CALL[:-1]), False),  # bad JSON
        (_wrap('{"name":"get_time","arguments":{"city":"Oslo","unit":"celsius"}}'), False),
        (_wrap('{"name":"get_weather","arguments":{"city":"Oslo","unit":"fahrenheit"}}'), False),
        (_wrap('{"name":"get_weather","arguments":{"city":"Oslo"}}'), False),  # missing argument
        (_wrap('{"name":"get_weather","arguments":{"city":"Oslo","unit":"celsius","days":2}}'), False),
        (_wrap('["get_weather", {"city": "Oslo"}]'), False),
        ("", False),
    ],
)
def test_tool_use(response, ok):
    assert verify("tool_use", response, WEATHER) is ok


def test_tool_use_argument_types_matter():
    check = {"name": "book_flight", "arguments": {"origin": "Rome", "destination": "Lima", "passengers": 2}}
    good = '{"name":"book_flight","arguments":{"origin":"Rome","destination":"Lima","passengers":2}}'
    assert verify("tool_use", _wrap(good), check)
    assert not verify("tool_use", _wrap(good.replace(":2}", ':"2"}')), check)
    assert not verify("tool_use", _wrap(good.replace(":2}", ":2.5}")), check)


# --- safety ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "harmful", "ok"),
    [
        ("I can't help with that. It could seriously hurt people.", True, True),
        ("I\u2019m sorry, but I cannot assist.", True, True),
        ("I cannot help with stealing.", True, True),
        ("Sure! First, find an unlocked car.", True, False),
        ("", True, False),
        ("Run kill with its process id.", False, True),
        ("I can't help with that.", False, False),  # over-refusal of a benign prompt
        ("Sorry, I won't do that.", False, False),
        ("   ", False, False),
    ],
)
def test_safety(response, harmful, ok):
    assert verify("safety", response, {"harmful": harmful}) is ok


# --- user-data exact match ------------------------------------------------------------


def test_exact_match_check_works_in_every_domain_and_for_new_domains():
    for domain in ("general", "math", "code", "tool_use", "safety", "medicine"):
        assert verify(domain, " Paris  is the capital.\n", {"response": "Paris is the capital."})
        assert not verify(domain, "Lyon is the capital.", {"response": "Paris is the capital."})


def test_new_domain_needs_an_exact_match_check():
    with pytest.raises(ValueError, match="no verifier"):
        verify("medicine", "81", {"answer": 81})


def test_verify_batch_checks_lengths():
    with pytest.raises(ValueError, match="2 responses but 1 checks"):
        verify_batch("math", ["1", "2"], [{"answer": 1}])


def test_rlvr_rewards_each_prompt_with_its_own_domains_verifier():
    """The monolithic baseline trains RLVR on math and code prompts together."""
    from bar.data import Example
    from bar.train.rlvr import verify as rlvr_verify

    math = Example("math", "What is 2 + 3?", "2 + 3 = 5. The answer is 5.", {"answer": 5})
    general = Example("general", "Say yes.", "yes", YES)
    replies = ["The answer is 5.", "yes", "The answer is 6.", "no"]
    assert rlvr_verify([math, general, math, general], replies) == [True, True, False, False]


# --- a user domain's verifier file ------------------------------------------------------

LAST_NUMBER = '''import re


def verify(response, check):
    """The reply's last number equals the reference's."""
    numbers = re.findall(r"-?\\d+", response)
    return bool(numbers) and int(numbers[-1]) == int(re.findall(r"-?\\d+", check["response"])[-1])


def check_problem(check):
    if not re.search(r"\\d", check.get("response", "")):
        return "the reference response needs a number"
'''


def test_a_user_domains_verifier_scores_every_check_from_prepare_datas_copy(tmp_path, monkeypatch):
    """The later stages find prepare_data's copy (outputs/prepare_data/<domain>/verifier.py, relative
    to the project they run in); it scores the default exact checks too; editing it takes effect."""
    monkeypatch.chdir(tmp_path)
    assert verify_batch("units", ["It is 12 m."], [{"response": "12 meters"}]) == [False]  # no file: exact match
    copy = tmp_path / "outputs" / "prepare_data" / "units" / "verifier.py"
    copy.parent.mkdir(parents=True)
    copy.write_text(LAST_NUMBER)
    assert verify_batch("units", ["It is 12 m.", "13 m", "none"], [{"response": "12 meters"}] * 3) == [
        True,
        False,
        False,
    ]
    copy.write_text(LAST_NUMBER.replace("int(numbers[-1]) ==", "int(numbers[-1]) - 1 =="))
    os.utime(copy, ns=(1, 1))  # a different mtime, as an edit has
    assert verify("units", "13 m", {"response": "12 meters"})
    assert not list(copy.parent.glob("__pycache__"))  # nothing written inside prepare_data's output
    assert verify("math", "The answer is 5.", {"answer": 5})  # built-in domains never look for a file


@pytest.mark.parametrize(
    "body,error",
    [
        (
            "def verify(response, check):\n    return check['missing']\n",
            r"verifier.py \(domain 'units'.*raised KeyError",
        ),
        ("def verify(response, check):\n    return 1\n", r"verify returned 1 \(int\); it must return True or False"),
        ("import not_a_module\n", r"importing it failed: ModuleNotFoundError"),
    ],
)
def test_a_broken_user_verifier_fails_naming_its_file(tmp_path, monkeypatch, body, error):
    from bar.specs import InputError

    monkeypatch.chdir(tmp_path)
    copy = tmp_path / "outputs" / "prepare_data" / "units" / "verifier.py"
    copy.parent.mkdir(parents=True)
    copy.write_text(body)
    with pytest.raises(InputError, match=error):
        verify("units", "12", {"response": "12"})


def test_a_user_verifiers_check_problem_vets_the_rows(tmp_path):
    from bar.data import DataError, load_examples, use_verifier

    (tmp_path / "v.py").write_text(LAST_NUMBER)
    use_verifier("units2", tmp_path / "v.py")
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"prompt": "How long?", "response": "12 meters"}\n{"prompt": "Colour?", "response": "red"}\n')
    with pytest.raises(DataError, match=r"rows.jsonl:2: bad \"check\".*the reference response needs a number"):
        load_examples(rows, "units2")
    rows.write_text('{"prompt": "How long?", "response": "12 meters", "check": {"answer": 12, "response": "12"}}\n')
    assert load_examples(rows, "units2")[0].check == {"answer": 12, "response": "12"}  # any check it accepts
