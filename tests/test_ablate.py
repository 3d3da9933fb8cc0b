"""bar.ablate's spec edits and checks, on a copy of the project's files (no stage runs: the
ablation run end to end, its workspace and its table are in tests/stages/test_pipeline.py)."""

import pytest
import yaml

from bar import ablate
from bar.specs import SpecError
from conftest import make_project


@pytest.fixture
def project(tmp_path):
    return make_project(tmp_path / "project", preset="default", git=False)


def ablation(**set_) -> ablate.Ablation:
    return ablate.Ablation(description="a test", set=set_)


def test_every_shipped_ablation_checks_out(project):
    shipped = ablate.load(project)
    assert {"merge_mean", "shared_lr_full", "anchor_ffn_trains", "router_fits_shared"} <= shipped.keys()
    for name, body in shipped.items():
        assert ablate.check(project, name, body), name


def test_experts_sets_every_expert_of_params_in_the_phases_it_has(project):
    written = ablate.edits(project, "x", ablation(experts={"phases": {"rlvr": {"steps": 3}, "sft": {"steps": 7}}}))
    experts = yaml.safe_load((project / "params.yaml").read_text())["experts"]
    assert sorted(written) == sorted(f"specs/experts/{e}.yaml" for e in experts)
    for file, data in written.items():
        before = yaml.safe_load((project / file).read_text())["phases"]
        assert data["phases"]["sft"]["steps"] == 7
        # An expert without RLVR (tool use, safety) is passed over there, not given the phase.
        assert ("rlvr" in data["phases"]) == ("rlvr" in before)
        assert "rlvr" not in before or data["phases"]["rlvr"]["steps"] == 3
        assert data["phases"]["sft"]["batch_size"] == before["sft"]["batch_size"]  # merged key by key


def test_a_key_the_file_lacks_is_named_with_the_ablation_and_the_file(project):
    with pytest.raises(SpecError) as e:
        ablate.edits(project, "typo", ablation(**{"specs/router.yaml": {"sample_fration": 0.2}}))
    assert str(e.value).startswith("specs/ablations.yaml: typo.set.specs/router.yaml: specs/router.yaml:")
    assert "no key 'sample_fration'" in str(e.value)
    with pytest.raises(SpecError, match=r"typo\.set: specs/nope\.yaml: no such spec file"):
        ablate.edits(project, "typo", ablation(**{"specs/nope.yaml": {"a": 1}}))
    # Under `experts`, only a phase may be missing: any other key is still a typo.
    with pytest.raises(SpecError, match=r"no key 'phases\.sft\.lr_scael'"):
        ablate.edits(project, "typo", ablation(experts={"phases": {"sft": {"lr_scael": {"router": 1}}}}))


def test_an_empty_mapping_of_the_file_takes_the_value_whole(project):
    """specs/router.yaml has `lr_scale: {}`: the groups it is set to are new keys, not typos."""
    scale = {"embeddings": 0.01}
    written = ablate.edits(
        project, "x", ablation(**{"specs/router.yaml": {"trainable": ["router", "embeddings"], "lr_scale": scale}})
    )
    assert written["specs/router.yaml"]["lr_scale"] == scale
    with pytest.raises(SpecError, match=r"no key 'lr_scael'"):
        ablate.edits(project, "typo", ablation(**{"specs/router.yaml": {"lr_scael": scale}}))


def test_a_value_the_spec_refuses_is_named_as_bar_validate_names_it_and_nothing_is_written(project):
    merge = (project / "specs" / "merge.yaml").read_text()
    with pytest.raises(SpecError) as e:
        ablate.check(project, "typo", ablation(**{"specs/merge.yaml": {"strategy": "meen"}}))
    assert str(e.value).startswith('specs/ablations.yaml: typo: specs/merge.yaml: strategy = "meen"'), e.value
    assert str(project) not in str(e.value)  # the scratch view's path is not shown
    assert (project / "specs" / "merge.yaml").read_text() == merge
    assert not (project / ablate.WORKSPACES).exists()


def test_a_malformed_ablations_file_is_one_line_naming_the_ablation_and_key(project):
    (project / ablate.ABLATIONS).write_text("typo:\n  set: {specs/merge.yaml: {strategy: mean}}\n")
    with pytest.raises(SpecError, match=r"^specs/ablations.yaml: typo\.description: Field required$"):
        ablate.load(project)
    (project / ablate.ABLATIONS).write_text("- merge_mean\n")
    with pytest.raises(SpecError, match="expected a mapping of ablation names"):
        ablate.load(project)


def test_rerun_names_the_stages_whose_lock_entry_differs(tmp_path):
    project, ws = tmp_path / "project", tmp_path / "ws"
    stages = {"train_anchor": {"outs": [{"md5": "a"}]}, "merge_experts": {"outs": [{"md5": "m"}]}}
    for root, merge in ((project, "m"), (ws, "m2")):
        root.mkdir()
        lock = {"stages": {**stages, "merge_experts": {"outs": [{"md5": merge}]}}}
        (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert ablate.rerun(project, ws) == ["merge_experts"]
    assert ablate.rerun(project, project) == []
