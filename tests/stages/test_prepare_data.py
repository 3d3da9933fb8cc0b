import json

import pytest

from bar.data.example import is_eval_prompt
from bar.specs import DataSpec
from bar.stages import prepare_data, read_jsonl, train_anchor
from conftest import dvc, edit_yaml, make_project


def test_the_anchor_split_joins_general_chat_in_the_anchors_training_data(tmp_path, monkeypatch):
    """Each domain's `anchor` rows (its share of the anchor's instruction mix) are drawn from the
    train side of its prompt space with their own seed: never an eval prompt, not the SFT rows."""
    spec = DataSpec(seed=0, pretrain={"general": 5}, domains={
        "general": {"sft": 8, "eval": 4}, "math": {"sft": 6, "anchor": 6, "eval": 4}, "code": {"sft": 6, "eval": 4}})
    out = tmp_path / "outputs" / "prepare_data"
    out.mkdir(parents=True)
    counts = prepare_data.prepare(spec, out)
    assert counts["math/anchor"] == 6 and counts["code/anchor"] == counts["general/anchor"] == 0
    anchor, sft = read_jsonl(out / "math" / "anchor.jsonl"), read_jsonl(out / "math" / "sft.jsonl")
    assert {r["domain"] for r in anchor} == {"math"} and not any(is_eval_prompt(r["prompt"]) for r in anchor)
    assert anchor != sft
    monkeypatch.chdir(tmp_path)
    assert [p.as_posix() for p in train_anchor.sft_files()] == [f"outputs/prepare_data/{f}.jsonl" for f in (
        "general/sft", "code/anchor", "general/anchor", "math/anchor")]


@pytest.mark.slow
def test_editing_the_users_data_reruns_prepare_data(tmp_path):
    """A split from the user's file under data/: real DVC sees the file change and re-runs prepare_data."""
    project = make_project(tmp_path / "project")
    rows = [{"prompt": f"What is {i} + 1?", "response": f"The answer is {i + 1}."} for i in range(5)]
    user = project / "data" / "math_sft.jsonl"
    user.write_text("".join(json.dumps(r) + "\n" for r in rows))
    edit_yaml(project / "specs" / "data.yaml", "domains.math.files", {"sft": "data/math_sft.jsonl"})
    dvc(project, "repro", "prepare_data")
    sft = project / "outputs" / "prepare_data" / "math" / "sft.jsonl"
    assert [r["prompt"] for r in read_jsonl(sft)] == [r["prompt"] for r in rows]
    user.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]))
    assert "prepare_data" in json.loads(dvc(project, "status", "--json", "prepare_data").stdout)
    dvc(project, "repro", "prepare_data")
    assert len(read_jsonl(sft)) == 3
