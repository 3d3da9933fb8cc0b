"""Every domain's splits, as prepare_data writes them (`bar.data.prepare`)."""

from bar.data.example import is_eval_prompt
from bar.data.prepare import prepare
from bar.files import read_jsonl
from bar.specs import DataSpec
from bar.stages import train_anchor


def test_the_anchor_split_joins_general_chat_in_the_anchors_training_data(tmp_path, monkeypatch):
    """Each domain's `anchor` rows (its share of the anchor's instruction mix) are drawn from the
    train side of its prompt space with their own seed: never an eval prompt, not the SFT rows."""
    spec = DataSpec(
        seed=0,
        pretrain={"general": 5},
        domains={
            "general": {"sft": 8, "eval": 4},
            "math": {"sft": 6, "anchor": 6, "eval": 4},
            "code": {"sft": 6, "eval": 4},
        },
    )
    out = tmp_path / "outputs" / "prepare_data"
    out.mkdir(parents=True)
    counts = prepare(spec, out)
    assert counts["math/anchor"] == 6 and counts["code/anchor"] == counts["general/anchor"] == 0
    anchor, sft = read_jsonl(out / "math" / "anchor.jsonl"), read_jsonl(out / "math" / "sft.jsonl")
    assert {r["domain"] for r in anchor} == {"math"} and not any(is_eval_prompt(r["prompt"]) for r in anchor)
    assert anchor != sft
    monkeypatch.chdir(tmp_path)
    # General chat, then the anchor rows of the domains that have some.
    assert [p.as_posix() for p in train_anchor.sft_files()] == [
        f"outputs/prepare_data/{f}.jsonl" for f in ("general/sft", "math/anchor")
    ]
