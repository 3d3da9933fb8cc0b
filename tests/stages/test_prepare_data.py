import json
import sys

import pytest
import yaml

from bar.files import read_jsonl
from bar.specs import Specs
from bar.train.phases import phase_fingerprint, phases_of
from conftest import dvc, edit_yaml, make_project, run, set_params


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


def reverse_rows(words: list[str]) -> str:
    """A domain of the user's: spell a word backwards (checked by exact match)."""
    return "".join(json.dumps({"prompt": f"Spell '{w}' backwards.", "response": w[::-1]}) + "\n" for w in words)


@pytest.mark.slow
def test_a_domain_of_the_users_gets_its_expert(tmp_path, monkeypatch):
    """A domain that is not built in: its splits from files under data/, an expert spec on it;
    real DVC prepares it and mixes the expert's data from it. Then its own verifier."""
    project = make_project(tmp_path / "project")
    words = [f"{a}{b}{c}" for a in "bcdfghjklm" for b in "aeiou" for c in "klmnprst"]  # 400 distinct words
    for split, part in {"sft": words[:200], "rl": words[200:300], "eval": words[300:]}.items():
        (project / "data" / f"reverse_{split}.jsonl").write_text(reverse_rows(part))
    edit_yaml(
        project / "specs" / "data.yaml",
        "domains.reverse",
        {"files": {s: f"data/reverse_{s}.jsonl" for s in ("sft", "rl", "eval")}},
    )
    spec = yaml.safe_load((project / "specs" / "experts" / "safety.yaml").read_text())
    spec |= {
        "name": "reverse",
        "domain": "reverse",
        "description": "words backwards",
        "mixture": {"sources": {"reverse": 1.0}, "general_share": 0.1, "sizes": {"sft": 150, "rl": 50}},
    }
    spec["phases"]["rlvr"] = yaml.safe_load((project / "specs" / "experts" / "math.yaml").read_text())["phases"]["rlvr"]
    (project / "specs" / "experts" / "reverse.yaml").write_text(yaml.safe_dump(spec))
    set_params(project, experts=["math", "code", "tool_use", "safety", "reverse"])
    run([sys.executable, "-m", "bar.cli", "validate"], project)

    failed = dvc(project, "repro", "mix_data@reverse", check=False)  # the tiny preset asks for 300 SFT items
    assert failed.returncode and "prepare_data made 200: lower the size or add rows to data/reverse_sft.jsonl" in (
        failed.stdout + failed.stderr
    )
    out = project / "outputs" / "prepare_data" / "reverse"
    assert [len(read_jsonl(out / f"{s}.jsonl")) for s in ("sft", "rl", "eval", "midtrain")] == [200, 100, 100, 0]
    assert read_jsonl(out / "eval.jsonl")[0]["domain"] == "reverse"
    edit_yaml(project / "specs" / "presets" / "tiny.yaml", "experts.mixture.sizes.sft", 150)
    dvc(project, "repro", "mix_data@reverse")
    mix = read_jsonl(project / "outputs" / "mix_data" / "reverse" / "sft.jsonl")
    assert len(mix) == 150 and {r["domain"] for r in mix} == {"reverse", "general"}
    assert sum(r["domain"] == "general" for r in mix) == 15

    from bar.data.verify import verify_batch  # the expert's RLVR reward and its evaluation: exact match

    monkeypatch.chdir(project)
    assert verify_batch("reverse", ["pak", "kap", "PAK"], [{"response": "pak"}] * 3) == [True, False, False]

    # Its own verifier: prepare_data publishes it where the RLVR reward and the evaluation find it,
    # and an edit of it re-runs prepare_data and changes the fingerprint of RLVR only.
    verifier = project / "data" / "reverse.py"
    verifier.write_text("def verify(response, check):\n    return response.strip().lower() == check['response']\n")
    edit_yaml(project / "specs" / "data.yaml", "domains.reverse.verifier", "data/reverse.py")
    dvc(project, "repro", "mix_data@reverse")
    assert (out / "verifier.py").read_text() == verifier.read_text()
    assert verify_batch("reverse", ["pak", "kap", "PAK"], [{"response": "pak"}] * 3) == [True, False, True]
    specs = Specs(project)
    phases = phases_of(specs, "reverse", project / "outputs" / "mix_data" / "reverse")
    assert [p.phase for p in phases] == ["sft", "rlvr"]
    before = [phase_fingerprint(specs, phases[: i + 1]) for i in range(2)]
    verifier.write_text(verifier.read_text().replace(".lower()", ""))
    assert "prepare_data" in json.loads(dvc(project, "status", "--json", "prepare_data").stdout)
    dvc(project, "repro", "mix_data@reverse")
    after = [phase_fingerprint(specs, phases[: i + 1]) for i in range(2)]
    assert after[0] == before[0] and after[1] != before[1]
    assert verify_batch("reverse", ["PAK"], [{"response": "pak"}]) == [False]
