"""The foundation pipeline through real DVC in a real git repository (tiny preset).

The tests of this module share one project and run in order: repro from scratch, a no-op
repro, then an edit that must re-run train_anchor only.
"""

import json
import sys

import pytest
import torch
import yaml

from conftest import edit_yaml, make_project, run

pytestmark = pytest.mark.slow
STAGES = ["prepare_data", "tokenizer", "pretrain_base", "train_anchor"]


def dvc(project, *args, **kw):
    return run([sys.executable, "-m", "dvc", *args], project, **kw)


def lock(project) -> dict:
    return yaml.safe_load((project / "dvc.lock").read_text())["stages"]


def out_hashes(project) -> dict[str, str]:
    """DVC's md5 of each stage's output folder."""
    return {name: next(o["md5"] for o in stage["outs"] if o["path"] == f"outputs/{name}")
            for name, stage in lock(project).items()}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    project = make_project(tmp_path_factory.mktemp("pipeline"))
    dvc(project, "repro")
    return project


def test_repro_runs_every_stage(project):
    assert list(lock(project)) == STAGES
    for name in STAGES:
        assert (project / "outputs" / name).is_dir()
        assert json.loads((project / "metrics" / f"{name}.json").read_text())
    assert (project / "outputs" / "pretrain_base" / "hf" / "model.safetensors").exists()
    assert not (project / "checkpoints" / "pretrain_base").exists()  # cleared once published


def test_each_stage_logged_one_mlflow_run(project):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["bar"])
    assert sorted(runs["tags.mlflow.runName"]) == sorted(STAGES)
    assert set(runs["status"]) == {"FINISHED"}
    anchor = runs[runs["tags.mlflow.runName"] == "train_anchor"].iloc[0]
    for tag in ("stage", "spec_hash", "data_hash", "git_commit", "base_hash"):
        assert anchor[f"tags.{tag}"] not in (None, "", "unknown"), tag
    assert anchor["tags.data_hash"] == out_hashes(project)["prepare_data"]
    history = mlflow.MlflowClient().get_metric_history(anchor["run_id"], "train/loss")
    assert [m.step for m in history] == list(range(1, len(history) + 1)) and len(history) > 5


def test_exported_hf_model_matches_megatron(project):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    from bar import parallel
    from bar.model import build
    from bar.specs import ModelSpec
    from bar.train.checkpoint import load_state

    out = project / "outputs" / "train_anchor"
    config = json.loads((out / "config.json").read_text())
    arch = ModelSpec(**config["arch"])
    parallel.init(1, 0)
    try:
        model = build(arch, 1)
        load_state(model, load_file(out / "model.safetensors"))
        model.eval()
        hf = AutoModelForCausalLM.from_pretrained(out / "hf").eval()
        assert type(hf).__name__ == "LlamaForCausalLM"
        x = torch.randint(0, config["vocab"], (3, 40), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ours = model(x, None, None, runtime_gather_output=True)[..., : config["vocab"]]
            theirs = hf(x).logits
        diff = (ours - theirs).abs().max().item()
        print(f"HF export: max |logit diff| = {diff:.2e}")
        assert ours.abs().max() > 1 and diff < 1e-4
    finally:
        parallel.shutdown()


def test_anchor_learned_over_base(project):
    base = json.loads((project / "metrics" / "pretrain_base.json").read_text())
    anchor = json.loads((project / "metrics" / "train_anchor.json").read_text())
    print(f"general pass rate: base {base['eval/general']:.1f}, anchor {anchor['eval/general']:.1f}")
    assert anchor["eval/general"] > base["eval/general"]


def test_second_repro_does_nothing(project):
    before = (project / "dvc.lock").read_text()
    mtimes = {s: (project / "outputs" / s).stat().st_mtime_ns for s in STAGES}
    status = dvc(project, "status", "--json")
    assert json.loads(status.stdout) == {}
    dvc(project, "repro")
    assert (project / "dvc.lock").read_text() == before
    assert mtimes == {s: (project / "outputs" / s).stat().st_mtime_ns for s in STAGES}


def test_anchor_lr_edit_reruns_train_anchor_only(project):
    before = out_hashes(project)
    mtimes = {s: (project / "outputs" / s).stat().st_mtime_ns for s in STAGES}
    edit_yaml(project / "specs" / "train.yaml", "anchor.optim.lr", 3.0e-4)
    assert set(json.loads(dvc(project, "status", "--json").stdout)) == {"train_anchor"}
    dvc(project, "repro")
    after = out_hashes(project)
    rerun = [s for s in STAGES if (project / "outputs" / s).stat().st_mtime_ns != mtimes[s]]
    assert rerun == ["train_anchor"]
    assert after["train_anchor"] != before["train_anchor"]
    assert {s: after[s] for s in STAGES[:3]} == {s: before[s] for s in STAGES[:3]}
    assert lock(project)["train_anchor"]["params"]["specs/train.yaml"]["anchor"]["optim"]["lr"] == 3.0e-4
