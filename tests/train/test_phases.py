"""bar.train.phases: an expert phase trains its groups at their `lr_scale`."""

import pytest


@pytest.mark.parametrize("scaled", [True, False])
def test_a_phase_trains_each_group_at_its_lr_scale(tiny_project, megatron, monkeypatch, scaled):
    """One SFT step of a branched expert with the embeddings at 1e-9 of the FFN's rate leaves
    them where they were while the FFN moves; without the scale they move as the FFN does (the
    merge of the redesign once dropped the argument that carries it)."""
    import torch
    from safetensors.torch import save_file

    from bar import tokenizer
    from bar.files import output
    from bar.model import build
    from bar.specs import Specs
    from bar.train.checkpoint import full_state
    from bar.train.phases import Phase, adapt, branch

    monkeypatch.chdir(tiny_project)
    specs = Specs(tiny_project)
    torch.manual_seed(0)
    anchor = full_state(build(specs.model, 1))
    for stage in ("pretrain_base", "train_anchor"):
        output(stage).mkdir(parents=True, exist_ok=True)
        save_file(anchor, output(stage, "model.safetensors"))
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
