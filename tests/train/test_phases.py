"""bar.train.phases: an expert phase trains its groups at their `lr_scale`."""

import json

import pytest


def random_anchor(specs) -> dict:
    """A randomly initialised model (seed 0), saved as the base and the anchor an expert branches from."""
    import torch
    from safetensors.torch import save_file

    from bar.files import output
    from bar.model import build
    from bar.train.checkpoint import full_state

    torch.manual_seed(0)
    anchor = full_state(build(specs.model, 1))
    for stage in ("pretrain_base", "train_anchor"):
        output(stage).mkdir(parents=True, exist_ok=True)
        save_file(anchor, output(stage, "model.safetensors"))
    return anchor


@pytest.mark.parametrize("scaled", [True, False])
def test_a_phase_trains_each_group_at_its_lr_scale(tiny_project, megatron, monkeypatch, scaled):
    """One SFT step of a branched expert with the embeddings at 1e-9 of the FFN's rate leaves
    them where they were while the FFN moves; without the scale they move as the FFN does (the
    merge of the redesign once dropped the argument that carries it)."""

    from bar import tokenizer
    from bar.files import output
    from bar.specs import Specs
    from bar.train.checkpoint import full_state
    from bar.train.phases import Phase, adapt, branch

    monkeypatch.chdir(tiny_project)
    specs = Specs(tiny_project)
    anchor = random_anchor(specs)
    sft = specs.expert("math").phases.sft
    spec = sft.model_copy(
        update={
            "steps": 1,
            "trainable": ["domain_ffn", "embeddings"],
            "lr_scale": {"embeddings": 1e-9} if scaled else {},
        }
    )
    model = branch(specs, 1, anchor)
    before = full_state(model)
    phase = Phase("sft", "sft", spec, [output("prepare_data", "math")])
    adapt(model, [phase], tiny_project / "ckpt", "run", specs, tokenizer.load(output("tokenizer")), 1, "test")
    moved = {k: (v - before[k]).abs().max().item() for k, v in full_state(model).items()}
    embeddings = max(v for k, v in moved.items() if "word_embeddings" in k)
    ffn = max(v for k, v in moved.items() if "local_experts.1." in k)
    assert ffn > 1e-5
    assert (embeddings < 1e-7) if scaled else (embeddings > 1e-5)


def test_an_expert_trains_on_conversations_with_tools_loss_on_assistant_tokens_only(
    tiny_project, megatron, monkeypatch
):
    """A user's SFT file of conversations (a system prompt, three user turns, tool calls and their
    results): every assistant turn is trained, up to its <|im_end|>, nothing else; an expert's SFT
    phase learns it."""
    from bar import tokenizer
    from bar.data import load_examples
    from bar.files import output, write_jsonl
    from bar.specs import Specs
    from bar.train.phases import Phase, adapt, branch

    monkeypatch.chdir(tiny_project)
    cities = ["Paris", "Rome", "Oslo", "Lima", "Cairo", "Quito", "Dakar", "Hanoi"]
    rows = []
    for i, city in enumerate(cities * 4):
        other = cities[(i + 3) % len(cities)]
        call = {"type": "function", "function": {"name": "weather", "arguments": {"city": city}}}
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": "You answer with the weather tool."},
                    {"role": "user", "content": f"Weather in {city}?"},
                    {"role": "assistant", "content": "", "tool_calls": [call]},
                    {"role": "tool", "content": json.dumps({"temp": 10 + i % 20})},
                    {"role": "assistant", "content": f"It is {10 + i % 20} degrees in {city}."},
                    {"role": "user", "content": f"And in {other}?"},
                    {"role": "assistant", "content": f"Ask me with the tool for {other}."},
                ],
                "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
            }
        )
    path = tiny_project / "data" / "weather_sft.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    examples = load_examples(path, "tool_use")
    tok = tokenizer.load(output("tokenizer"))

    e = examples[0]
    ids, trained = tokenizer.chat_ids(tok, e.asked, e.response, e.tools)
    whole = tok.apply_chat_template(
        [*e.asked, {"role": "assistant", "content": e.response}], tools=e.tools, tokenize=False
    )
    assert tok.decode(ids) == whole.removesuffix("\n")
    assert tok.decode([i for i, t in zip(ids, trained) if t]) == (
        '<tool_call>{"name":"weather","arguments":{"city":"Paris"}}</tool_call><|im_end|>'
        "It is 10 degrees in Paris.<|im_end|>Ask me with the tool for Lima.<|im_end|>"
    )
    # `train_turns: last` (specs/data.yaml) trains the reply only; prepare_data carries it with the row.
    from bar.data import Example
    from bar.data.prepare import split_rows
    from bar.specs.declarations import DomainDataSpec

    spec = DomainDataSpec(files={"sft": str(path)}, train_turns="last")
    last = Example.from_json(split_rows("tool_use", "sft", spec, 0)[0])
    ids_last, trained_last = tokenizer.example_ids(tok, last)
    assert ids_last == ids and tok.decode([i for i, t in zip(ids_last, trained_last) if t]) == (
        "Ask me with the tool for Lima.<|im_end|>"
    )

    specs = Specs(tiny_project)
    anchor = random_anchor(specs)
    data = tiny_project / "weather"
    data.mkdir()
    write_jsonl(data / "sft.jsonl", [x.to_json() for x in examples])
    sft = specs.expert("tool_use").phases.sft.model_copy(update={"steps": 30, "batch_size": 4, "lr_scale": {}})
    model = branch(specs, 1, anchor)
    logs, _ = adapt(model, [Phase("sft", "sft", sft, [data])], tiny_project / "ckpt", "run", specs, tok, 1, "test")
    losses = [r["loss"] for r in logs["sft"]]
    print(f"SFT on conversations with tools: loss {losses[0]:.2f} -> {losses[-1]:.2f}")
    assert losses[-1] < losses[0] - 1.0


def test_a_phase_fingerprint_reads_only_the_files_its_phases_train_on(tiny_project, monkeypatch):
    """An upgrade with more SFT rows (code v2) keeps the mid-training of the version before: a
    phase's fingerprint covers the data files of it and the phases before it, not the later ones'."""
    from bar.specs import Specs
    from bar.train.phases import phase_fingerprint, phases_of

    monkeypatch.chdir(tiny_project)
    specs = Specs(tiny_project)
    data = tiny_project / "mixture"
    data.mkdir()
    for name in ("midtrain", "sft", "rl"):
        (data / f"{name}.jsonl").write_text(json.dumps({"domain": "code", "v": 1}) + "\n")
    phases = phases_of(specs, "code", data)
    assert [p.phase for p in phases] == ["midtrain", "sft", "rlvr"]

    def fingerprints():
        return [phase_fingerprint(specs, phases[: i + 1]) for i in range(len(phases))]

    before = fingerprints()
    (data / "sft.jsonl").write_text(json.dumps({"domain": "code", "v": 2}) + "\n")
    after = fingerprints()
    assert after[0] == before[0] and after[1] != before[1] and after[2] != before[2]
    (data / "rl.jsonl").write_text(json.dumps({"domain": "code", "v": 2}) + "\n")
    assert fingerprints()[:2] == after[:2] and fingerprints()[2] != after[2]
    (data / "midtrain.jsonl").write_text(json.dumps({"domain": "code", "v": 2}) + "\n")
    assert all(a != b for a, b in zip(fingerprints(), after))
