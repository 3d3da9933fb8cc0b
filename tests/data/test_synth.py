"""The synthetic data (`bar.data.synth`): examples with verifiable checks, and plain-text documents."""

import hashlib
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from bar.data import DOMAINS, TOOL_CALL_END, TOOL_CALL_START, Example, documents, examples, synth, verify_batch
from bar.data.example import is_eval_prompt


@pytest.mark.parametrize("domain", DOMAINS)
@pytest.mark.parametrize("split", ["train", "eval"])
def test_reference_responses_verify(domain, split):
    items = examples(domain, split, 200, seed=3)
    assert len(items) == 200
    assert len({ex.prompt for ex in items}) == 200
    assert all(ex.domain == domain for ex in items)
    assert verify_batch(domain, [ex.response for ex in items], [ex.check for ex in items]) == [True] * 200


@pytest.mark.parametrize("domain", DOMAINS)
def test_splits_are_decided_by_the_prompt_and_never_overlap(domain):
    train = examples(domain, "train", 1000, seed=0)
    evaluation = examples(domain, "eval", 300, seed=0)
    assert not any(is_eval_prompt(ex.prompt) for ex in train)
    assert all(is_eval_prompt(ex.prompt) for ex in evaluation)
    # Other seeds draw other prompts, but still never across the split.
    other_train = examples(domain, "train", 1000, seed=1)
    assert not {ex.prompt for ex in other_train + train} & {ex.prompt for ex in evaluation}


@pytest.mark.parametrize("domain", DOMAINS)
def test_same_seed_same_examples_other_seed_other_examples(domain):
    first = examples(domain, "train", 100, seed=7)
    assert first == examples(domain, "train", 100, seed=7)
    assert first != examples(domain, "train", 100, seed=8)
    # A smaller n is a prefix of a larger one, so growing a dataset keeps its old rows.
    assert examples(domain, "train", 40, seed=7) == first[:40]


def test_output_does_not_depend_on_python_hash_seed():
    script = (
        "import hashlib, json\n"
        "from bar.data import DOMAINS, documents, examples\n"
        "rows = [[e.to_json() for e in examples(d, 'eval', 30, 5)] + documents(d, 10, 5) for d in DOMAINS]\n"
        "print(hashlib.sha256(json.dumps(rows).encode()).hexdigest())\n"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        command = [sys.executable, "-c", script]
        out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        digests.add(out.stdout.strip())
    assert len(digests) == 1


def test_examples_are_json_round_trippable():
    for domain in DOMAINS:
        for ex in examples(domain, "train", 20, seed=0):
            data = json.loads(json.dumps(ex.to_json()))
            assert Example.from_json(data) == ex


def test_tool_call_tokens_only_in_tool_use_responses():
    for domain in DOMAINS:
        for ex in examples(domain, "train", 200, seed=0):
            assert TOOL_CALL_START not in ex.prompt and TOOL_CALL_END not in ex.prompt
            has_call = TOOL_CALL_START in ex.response
            assert has_call == (domain == "tool_use")


def test_prompts_and_answers_stay_short():
    # A character proxy for the token budget (prompts ~80 tokens, answers ~40, with a
    # 3k-vocabulary byte-level BPE): English runs ~3 characters per token, compact JSON ~4.5.
    for domain in DOMAINS:
        prompt_chars = 380 if domain == "tool_use" else 200
        for ex in examples(domain, "eval", 300, seed=0):
            assert len(ex.prompt) <= prompt_chars, ex.prompt
            assert len(ex.response) <= 130, ex.response


def test_safety_is_roughly_balanced():
    harmful = sum(ex.check["harmful"] for ex in examples("safety", "train", 1000, seed=0))
    assert 400 < harmful < 600


def test_code_tests_have_at_least_three_cases():
    for ex in examples("code", "train", 300, seed=0):
        assert len(ex.check["tests"]) >= 3


def test_held_out_code_tasks_take_one_step_several_or_a_rule_shown_by_examples_and_catch_near_misses():
    held_out = examples("code", "eval", 200, seed=0)
    by_example = [ex for ex in held_out if "as these examples show" in ex.prompt]
    several = [ex for ex in held_out if len(ex.check["tests"]) == 6 and ex not in by_example]
    assert 45 <= len(by_example) <= 90 and 45 <= len(several) <= 90  # about a third each
    # A near miss of each bounded family fails every task of it: `<=` for "less than", no clamping.
    near_misses = {
        "that is less than": "def {f}(xs):\n    below = [v for v in xs if v <= {k}]\n    return max(below) if below else None",
        "limited to the range": "def {f}(x):\n    return x",
    }
    for words, wrong in near_misses.items():
        tasks = [ex for ex in several if words in ex.prompt]
        assert tasks
        for ex in tasks:
            k = ex.prompt.split("less than ")[-1].split(",")[0] if "less than" in words else ""
            assert not verify_batch("code", [wrong.format(f=ex.check["entry"], k=k)], [ex.check])[0], ex.prompt
    # A chain of operations with its last step left out fails nearly always.
    chains = [ex for ex in several if "and returns the result" in ex.prompt]
    dropped = [
        ex.response.replace("\n    return result", "").rsplit("\n", 1)[0] + "\n    return result" for ex in chains
    ]
    assert sum(verify_batch("code", dropped, [ex.check for ex in chains])) <= len(chains) // 10
    # A rule shown by examples is tested beyond them: three tests or more take inputs not shown.
    for ex in by_example:
        shown = ex.prompt.split("examples show: ")[1]
        assert sum(f"{args[0]!r} -> " not in shown for args, _ in ex.check["tests"]) >= 3, ex.prompt


def test_too_many_examples_is_a_clear_error(monkeypatch):
    # A domain with only 50 distinct prompts.
    tiny = SimpleNamespace(sample=lambda rng: Example("general", f"Say {rng.randrange(50)}.", "ok", {"response": "ok"}))
    monkeypatch.setitem(synth.MODULES, "general", tiny)
    monkeypatch.setattr(synth, "_MAX_STALE_CANDIDATES", 2000)
    available = sum(not is_eval_prompt(f"Say {i}.") for i in range(50))
    assert len(examples("general", "train", available, seed=0)) == available
    with pytest.raises(ValueError, match=f"cannot produce {available + 1} distinct train prompts"):
        examples("general", "train", available + 1, seed=0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown domain"):
        examples("poetry", "train", 1, seed=0)
    with pytest.raises(ValueError, match="split"):
        examples("math", "test", 1, seed=0)
    assert examples("math", "train", 0, seed=0) == []


def test_split_hash_is_stable():
    # Pinned so a change of the split rule (which would leak eval into old train sets) is loud.
    assert hashlib.sha256(b"What is 2 + 2?").digest()[0] >= 26
    assert is_eval_prompt("What is 2 + 2?") is False
    fraction = sum(is_eval_prompt(f"prompt {i}") for i in range(10_000)) / 10_000
    assert 0.08 < fraction < 0.12


@pytest.mark.parametrize("domain", DOMAINS)
def test_documents_are_deterministic_plain_text(domain):
    docs = documents(domain, 300, seed=2)
    assert docs == documents(domain, 300, seed=2)
    assert docs != documents(domain, 300, seed=3)
    assert all(isinstance(doc, str) and doc.strip() for doc in docs)
    assert len(set(docs)) > 200  # varied, not a handful of repeats


@pytest.mark.parametrize("domain", DOMAINS)
def test_documents_never_contain_tool_call_tokens(domain):
    text = "\n".join(documents(domain, 1000, seed=0))
    assert TOOL_CALL_START not in text
    assert TOOL_CALL_END not in text


@pytest.mark.parametrize("domain", DOMAINS)
def test_documents_never_contain_an_eval_prompt(domain):
    text = "\n".join(documents(domain, 1000, seed=0))
    held_out = examples(domain, "eval", 1000, seed=0)
    leaked = [ex.prompt for ex in held_out if ex.prompt in text]
    assert leaked == []


def test_documents_quote_train_examples():
    # The instruction-style documents are the plain-text form of train pairs.
    text = "\n".join(documents("math", 200, seed=0))
    assert "Question: " in text and "The answer is" in text
    general = "\n".join(documents("general", 200, seed=0))
    assert "Instruction: " in general and "Answer: " in general
