"""A base model of the user's (`specs/model.yaml: base`: a Llama, an OLMo 2, an Olmo 3) instead of pre-training
one, and an anchor of the user's instead of training one: real DVC runs the pipeline from them."""

import json
import shutil
import sys

import pytest
import torch
import yaml

from conftest import dvc, edit_yaml, make_base, make_project, quick, run, set_params


@pytest.mark.slow
def test_the_pipeline_starts_from_the_users_base(tmp_path):
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    project = make_project(tmp_path / "project")
    user = make_base(project / "data" / "base" / "llama", chat_template=True)  # OLMo 2's chat format
    model_yaml = project / "specs" / "model.yaml"
    edit_yaml(model_yaml, "base", "data/base/llama")
    bar = [sys.executable, "-m", "bar.cli"]
    failed = run([*bar, "validate"], project, check=False)
    assert failed.returncode
    # Each spec file is checked as written first, then with the preset over it.
    assert "specs/model.yaml: num_layers = 4: the base data/base/llama has 2" in failed.stderr
    # The base sets the architecture: the spec keeps what it does not (the preset's is the tiny one).
    model_yaml.write_text(yaml.safe_dump({"base": "data/base/llama", "seq_length": 256, "init_std": 0.02}))
    failed = run([*bar, "validate"], project, check=False)
    assert "specs/presets/tiny.yaml: model.vocab_size = 512: the base data/base/llama has 448" in failed.stderr
    # Rows of 384: the base's small vocabulary writes a tool-use conversation in up to 350 tokens.
    edit_yaml(project / "specs" / "presets" / "tiny.yaml", "model", {"seq_length": 384})
    edit_yaml(project / "specs" / "presets" / "tiny.yaml", "train.anchor.steps", 60)
    edit_yaml(project / "specs" / "presets" / "tiny.yaml", "eval.num_examples", 4)  # scores are not the point here
    run([*bar, "validate"], project)

    dvc(project, "repro", "pretrain_base")
    theirs = PreTrainedTokenizerFast.from_pretrained(str(user))
    tok = PreTrainedTokenizerFast.from_pretrained(str(project / "outputs" / "tokenizer"))
    text = "The weather was mild, so 12 friends walked home."
    assert tok.encode(text, add_special_tokens=False) == theirs.encode(text, add_special_tokens=False)
    added = tok.convert_tokens_to_ids(
        ["<|endoftext|>", "<|pad|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>"]
    )
    assert added == list(range(len(theirs), len(theirs) + 6))
    # Its own chat format is kept: the pipeline's examples are rendered through it, a reply ends with </s>.
    assert tok.chat_template == theirs.chat_template and tok.eos_token == "</s>"

    base = AutoModelForCausalLM.from_pretrained(project / "outputs" / "pretrain_base" / "hf").eval()
    original = AutoModelForCausalLM.from_pretrained(user).eval()
    assert type(base) is type(original)
    x = torch.randint(0, len(theirs), (2, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(base(x).logits[..., : len(theirs)], original(x).logits)
    embed = base.model.embed_tokens.weight.detach()
    assert torch.allclose(embed[added], embed[: len(theirs)].mean(0).expand(6, -1))
    metrics = json.loads((project / "metrics" / "pretrain_base.json").read_text())
    assert metrics["cost/tokens"] == 0 and "eval/general" in metrics

    (user / "README.md").write_text("a new revision of the base\n")
    status = json.loads(dvc(project, "status", "--json").stdout)
    assert {"tokenizer", "pretrain_base", "train_anchor"} <= set(status)
    (user / "README.md").unlink()

    dvc(project, "repro", "train_anchor")  # post-training starts from it
    anchor = project / "outputs" / "train_anchor"
    log = json.loads((anchor / "train_log.json").read_text())
    assert log[-1]["loss"] < log[0]["loss"] - 1.0

    # A domain of the user's added later: the anchor is scored on it too, but not trained again.
    weights = (anchor / "model.safetensors").read_bytes()
    rows = [{"prompt": f"Spell '{w}' backwards.", "response": w[::-1]} for w in ("kat", "dorp", "milu", "pane")]
    (project / "data" / "reverse_eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    edit_yaml(project / "specs" / "data.yaml", "domains.reverse", {"files": {"eval": "data/reverse_eval.jsonl"}})
    dvc(project, "repro", "train_anchor")
    assert (anchor / "model.safetensors").read_bytes() == weights
    assert "reverse" in json.loads((anchor / "eval.json").read_text())
    metrics = json.loads((project / "metrics" / "train_anchor.json").read_text())
    assert metrics["cost/tokens"] == 0 and "eval/reverse" in metrics  # it reused its trained weights


@pytest.mark.slow
@pytest.mark.parametrize(
    "model_type,base,tp_size",
    [
        ("olmo3", {"window": 16}, 2),  # OLMo 2's layers, every other one over a sliding window of 16 tokens
        ("qwen3", {"tied": True, "head_dim": 24}, 2),  # tied embeddings, heads wider than hidden / heads
        ("mistral", {"window": 16}, 1),  # every layer over a sliding window
    ],
)
def test_a_base_of_each_family_imports_through_pretrain_base(tmp_path, model_type, base, tp_size):
    """pretrain_base imports the base over `tp_size` tensor-parallel ranks and scores it (at tp 2,
    decoding through Megatron-Core's inference path); its export is the family's class with the
    original's logits (the Llama and OLMo 2 pipelines above and below check theirs)."""
    from transformers import AutoModelForCausalLM

    project = make_project(tmp_path / "project")
    user = make_base(project / "data" / "base" / model_type, model_type=model_type, **base)
    # Rows of 512: the small base's tokenizer writes a tool-use conversation in up to 327 tokens.
    model = {"base": f"data/base/{model_type}", "seq_length": 512, "init_std": 0.02}
    (project / "specs" / "model.yaml").write_text(yaml.safe_dump(model))
    preset = project / "specs" / "presets" / "tiny.yaml"
    edit_yaml(preset, "model", {"seq_length": 512})
    edit_yaml(preset, "train.pretrain.tp_size", tp_size)
    edit_yaml(preset, "eval.num_examples", 4)
    dvc(project, "repro", "pretrain_base")

    ours = AutoModelForCausalLM.from_pretrained(project / "outputs" / "pretrain_base" / "hf").eval()
    original = AutoModelForCausalLM.from_pretrained(user).eval()
    assert type(ours) is type(original)
    assert getattr(ours.config, "layer_types", None) == getattr(original.config, "layer_types", None)
    assert getattr(ours.config, "sliding_window", None) == base.get("window")
    vocab = original.config.vocab_size
    x = torch.randint(0, vocab, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(ours(x).logits[..., :vocab], original(x).logits)
    metrics = json.loads((project / "metrics" / "pretrain_base.json").read_text())
    assert metrics["cost/tokens"] == 0 and "eval/general" in metrics


@pytest.mark.slow
def test_the_routed_model_from_an_olmo2_base_and_anchor_serves_per_token_as_flexolmo(tmp_path):
    """The whole tiny pipeline from an OLMo 2 base and an anchor of the user's (the base
    post-trained: imported, not trained), the router serving every expert per token
    (`sequence_topk: null`): its export loads as FlexOlmoForCausalLM without trust_remote_code
    and gives the routed model's logits."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from bar import parallel
    from bar.model import build
    from bar.specs import ModelSpec
    from bar.train.checkpoint import load_state

    project = make_project(tmp_path / "project")
    user = make_base(project / "data" / "base" / "olmo", model_type="olmo2")
    chat = project / "data" / "anchor" / "olmo-chat"  # the user's post-training: every weight moved
    post_trained = AutoModelForCausalLM.from_pretrained(user)
    with torch.no_grad():
        for p in post_trained.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    post_trained.save_pretrained(chat)
    for f in user.glob("tokenizer*"):
        shutil.copy(f, chat)
    (project / "specs" / "model.yaml").write_text(
        yaml.safe_dump(
            {"base": "data/base/olmo", "anchor": "data/anchor/olmo-chat", "seq_length": 256, "init_std": 0.02}
        )
    )
    quick(project)  # what runs is the point, not the scores
    set_params(project, experts=["code", "safety"])
    edit_yaml(project / "specs" / "presets" / "tiny.yaml", "model", {"seq_length": 256})
    # The base's small vocabulary writes some tool-use conversations in more than a row's 257
    # tokens: left out whole (no expert here trains tool use; the anchor is imported).
    edit_yaml(project / "specs" / "data.yaml", "domains.tool_use.skip_bad_rows", True)
    edit_yaml(project / "specs" / "router.yaml", "sequence_topk", None)
    dvc(project, "repro", "fit_router")

    # The imported base is the user's model, exported in its own class (Olmo2ForCausalLM).
    base = AutoModelForCausalLM.from_pretrained(project / "outputs" / "pretrain_base" / "hf").eval()
    original = AutoModelForCausalLM.from_pretrained(user).eval()
    assert type(base) is type(original)
    x = torch.randint(0, original.config.vocab_size, (2, 30), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(base(x).logits[..., : original.config.vocab_size], original(x).logits)
    assert json.loads((project / "metrics" / "tokenizer.json").read_text())["conversations_too_long"] > 0
    # The anchor is the user's, imported: its logits, and no training.
    anchor = AutoModelForCausalLM.from_pretrained(project / "outputs" / "train_anchor" / "hf").eval()
    with torch.no_grad():
        assert torch.equal(anchor(x).logits[..., : original.config.vocab_size], post_trained.eval()(x).logits)
    metrics = json.loads((project / "metrics" / "train_anchor.json").read_text())
    assert metrics["cost/tokens"] == 0 and "eval/code" in metrics

    out = project / "outputs" / "fit_router"
    config = json.loads((out / "config.json").read_text())
    arch = ModelSpec(**config["arch"])
    assert arch.family == "olmo2"
    hf = AutoModelForCausalLM.from_pretrained(out / "hf").eval()
    assert type(hf).__name__ == "FlexOlmoForCausalLM" and hf.config.num_experts == config["num_experts"] > 2
    parallel.init(1, 0)
    try:
        model = build(arch, 1, num_experts=config["num_experts"], topk=config.get("topk")).eval()
        load_state(model, load_file(out / "model.safetensors"))
        x = torch.randint(0, config["vocab"], (3, 40), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ours = model(x, None, None, runtime_gather_output=True)[..., : config["vocab"]]
            theirs = hf(x).logits
    finally:
        parallel.shutdown()
    diff = (ours - theirs).abs().max().item()
    print(f"routed OLMo 2 as FlexOlmoForCausalLM: max |logit diff| = {diff:.2e}")
    assert ours.abs().max() > 1 and diff < 1e-4
