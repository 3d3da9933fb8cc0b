"""bar's held-out splits as lm-evaluation-harness tasks: lm-eval alone, on the exported routed
model, gives bar's own replies and pass rates, a domain of the user's (its verifier) included."""

import json
import shutil
import sys

import pytest
import torch

from bar import harness
from bar.specs import EvalSpec, HarnessSpec, InputError, Specs

NUM_PROMPTS = 8
PARITY = '''def verify(response, check):
    """Not an exact match: an even number of characters passes."""
    return len(response) % 2 == 0
'''


@pytest.fixture(scope="module")
def project(tiny_data, tmp_path_factory):
    """The tiny project's splits and tokenizer, plus a domain of the user's scored by its verifier."""
    dest = tmp_path_factory.mktemp("harness") / "project"
    shutil.copytree(tiny_data, dest, ignore=shutil.ignore_patterns("mlruns"))
    parity = dest / "outputs" / "prepare_data" / "parity"
    parity.mkdir()
    rows = [json.loads(line) for line in (parity.parent / "general" / "eval.jsonl").read_text().splitlines()]
    parity.joinpath("eval.jsonl").write_text(
        "".join(json.dumps(r | {"domain": "parity", "check": {"response": r["response"]}}) + "\n" for r in rows)
    )
    parity.joinpath("verifier.py").write_text(PARITY)
    return dest


@pytest.fixture(scope="module")
def routed(project, megatron, tmp_path_factory):
    """A random 4-expert MoE choosing one expert per sequence, with bar's tokenizer, exported; its
    LM head row of <tool_call> is its most frequent reply token's, scaled up, so that replies carry
    the marker lm-eval must not drop."""
    from collections import Counter

    from bar import tokenizer
    from bar.data.example import read_examples
    from bar.decode import generate
    from bar.model import build
    from bar.model.hf import export
    from bar.train.checkpoint import full_state

    # fp32: transformers and bar's decoder then agree token for token (in bf16 their kernels round
    # differently, and a near tie in a random model can go either way). Rows of 128 tokens: the
    # longest prompts with their replies outgrow them, so lm-eval needs bar's max_length.
    arch = Specs(project).model.model_copy(update={"precision": "fp32", "seq_length": 128})
    tok = tokenizer.load(project / "outputs" / "tokenizer")
    torch.manual_seed(0)
    model = build(arch, 1, num_experts=4).eval()
    prompts = [
        tokenizer.prompt_ids(tok, e.prompt)
        for e in read_examples(project / "outputs" / "prepare_data" / "tool_use" / "eval.jsonl")
    ]
    with torch.no_grad():
        for layer in model.decoder.layers:
            layer.mlp.router.weight.normal_(0, 1.0)  # routing far from uniform
        kw = dict(stop_ids=tokenizer.stop_ids(tok), vocab_size=len(tok), pad_id=tok.pad_token_id, sequence_topk=1)
        replies = generate(model, prompts[:NUM_PROMPTS], max_new_tokens=8, **kw)
        most = Counter(t for r in replies for t in r).most_common(1)[0][0]
        head = model.output_layer.weight
        head[tok.convert_tokens_to_ids(tokenizer.TOOL_CALL_START)] = 1.5 * head[most]
    folder = tmp_path_factory.mktemp("routed") / "hf"
    export(full_state(model), arch, tok, folder, num_experts=4, sequence_topk=1)
    return model, tok, arch, folder


def test_lm_eval_on_the_exported_tasks_gives_bars_replies_and_scores(project, routed, tmp_path, monkeypatch):
    from bar.scoring import eval_examples, responses, score

    model, tok, arch, folder = routed
    spec = EvalSpec(max_new_tokens=8, num_examples=NUM_PROMPTS, batch_size=NUM_PROMPTS)
    domains = [*sorted(Specs(project).data.domains), "parity"]
    monkeypatch.chdir(project)
    bar_replies, bar_scores, bar_outcomes = {}, {}, {}
    for d in domains:
        examples = eval_examples(d, spec)
        prompts = [e.prompt for e in examples]
        bar_replies[d] = responses(model, tok, prompts, max_new_tokens=spec.max_new_tokens, sequence_topk=1)
        scored = score(model, tok, examples, max_new_tokens=spec.max_new_tokens, sequence_topk=1)
        bar_scores[d], bar_outcomes[d] = scored["pass_rate"], [100.0 * c for c in scored["correct"]]
    max_length = harness.write_tasks(tmp_path / "harness", domains, spec, tok)
    assert max_length > arch.seq_length  # prompts lm-eval would cut without it

    # Elsewhere, as a user of lm-eval alone: only the task folder's copy of the verifier can score parity.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys.modules["bar.data.verify"], "_chosen", {})
    out = harness.run(folder, [harness.GROUP], [tmp_path / "harness"], max_length, log_samples=True)

    assert any("<tool_call>" in r for r in bar_replies["tool_use"])  # the check below can fail
    assert 0 < bar_scores["parity"] < 100  # the verifier, not an exact match, decides
    for d in domains:
        assert out["samples"][harness.task_name(d)] == bar_replies[d], d
        assert out[f"{harness.task_name(d)}/pass_rate"] == pytest.approx(bar_scores[d]), d
        assert out["outcomes"][harness.task_name(d)] == bar_outcomes[d], d  # prompt by prompt
    assert out[f"{harness.GROUP}/pass_rate"] == pytest.approx(sum(bar_scores.values()) / len(domains))
    # lm-eval batches prompts of different lengths: the export pads them on the left.
    batched = harness.run(folder, [harness.GROUP], [tmp_path / "harness"], max_length, log_samples=True, batch_size=8)
    assert batched["samples"] == out["samples"]


def test_named_tasks_without_lm_eval_fail_in_one_line_naming_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # what an environment without the extra has
    harness.require(HarnessSpec())  # nothing named: lm-eval is not needed
    with pytest.raises(InputError, match=r"harness.tasks = \['bar_math'\].*pip install -e '\.\[eval\]'") as e:
        harness.require(HarnessSpec(tasks=["bar_math"]))
    assert "\n" not in str(e.value)
