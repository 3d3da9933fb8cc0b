import pytest

from bar.data import DOMAINS, TOOL_CALL_END, TOOL_CALL_START, documents, examples


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
