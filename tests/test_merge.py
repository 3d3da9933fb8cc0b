"""The merge on small synthetic experts: layout, strategies and the errors users see."""

import json

import pytest
import torch
from safetensors.torch import save_file

from bar.merge import MergeError, check_compatible, merge, trimmed, with_merged_shared, with_only
from bar.specs import MergeSpec

FC1 = "decoder.layers.0.mlp.experts.local_experts.{}.linear_fc1.weight"
ROUTER = "decoder.layers.0.mlp.router.weight"
EMB = "embedding.word_embeddings.weight"
ARCH = {
    "num_layers": 1,
    "hidden_size": 4,
    "num_attention_heads": 2,
    "num_query_groups": 1,
    "ffn_hidden_size": 3,
    "vocab_size": 10,
    "seq_length": 8,
    "rope_base": 10000.0,
    "norm_eps": 1e-5,
    "init_std": 0.02,
}
CONFIG = {"kind": "moe", "num_experts": 2, "arch": ARCH, "vocab": 10, "anchor_sha256": "a", "tokenizer_sha256": "t"}


def expert(root, name, seed, anchor_ffn, anchor_row=None, **config):
    """A 2-slot expert: `anchor_row` is its router's anchor row (zeros, as upcycling leaves it)."""
    g = torch.Generator().manual_seed(seed)
    row = torch.zeros(1, 4) if anchor_row is None else anchor_row[None]
    state = {
        FC1.format(0): anchor_ffn,
        FC1.format(1): torch.randn(6, 4, generator=g),
        ROUTER: torch.cat([row, torch.randn(1, 4, generator=g)]),
        EMB: torch.randn(10, 4, generator=g),
    }
    path = root / name
    path.mkdir()
    save_file(state, path / "model.safetensors")
    (path / "config.json").write_text(json.dumps({**CONFIG, **config}))
    return path, state


@pytest.fixture
def experts(tmp_path):
    """Three experts of one anchor; their router's anchor row is nonzero (the same in each: it
    is frozen while an expert trains)."""
    anchor_ffn, anchor_row = torch.randn(6, 4), torch.randn(4)
    made = {n: expert(tmp_path, n, i, anchor_ffn, anchor_row) for i, n in enumerate(["math", "code", "safety"])}
    return {n: p for n, (p, _) in made.items()}, {n: s for n, (_, s) in made.items()}, anchor_ffn


def saved_anchor(root, embeddings):
    """An anchor model folder holding its shared tensors (here: the embeddings)."""
    (root / "anchor").mkdir()
    save_file({EMB: embeddings}, root / "anchor" / "model.safetensors")
    return root / "anchor"


def test_slots_rows_and_mean(experts, tmp_path):
    paths, states, anchor_ffn = experts
    out = merge(paths, MergeSpec(strategy="mean"))
    assert torch.equal(out[FC1.format(0)], anchor_ffn)
    for i, name in enumerate(paths, start=1):
        assert torch.equal(out[FC1.format(i)], states[name][FC1.format(1)])
        assert torch.equal(out[ROUTER][i], states[name][ROUTER][1])
    assert out[ROUTER].shape == (4, 4)
    # The anchor's row is kept (the mean of the experts' identical rows: up to float32 rounding).
    anchor_row = states["math"][ROUTER][0]
    assert anchor_row.abs().min() > 0
    merged = [
        out,
        merge(paths, MergeSpec(strategy="weighted_mean", weights={"math": 5, "code": 1, "safety": 2})),
        merge(paths, MergeSpec(strategy="disjoint_mean"), anchor=saved_anchor(tmp_path, torch.randn(10, 4))),
    ]
    for row in (m[ROUTER][0] for m in merged):
        assert torch.allclose(row, anchor_row, rtol=1e-6, atol=0)
    mean = sum(s[EMB].double() for s in states.values()) / 3
    assert torch.allclose(out[EMB], mean.float())


def test_an_expert_as_the_merge_leaves_it(experts):
    """Its own FFN slots and router rows, every shared tensor as merged."""
    paths, states, _ = experts
    out = merge(paths, MergeSpec(strategy="mean"))
    leaves = with_merged_shared(states["code"], out)
    assert set(leaves) == set(states["code"])
    assert torch.equal(leaves[EMB], out[EMB]) and not torch.equal(leaves[EMB], states["code"][EMB])
    for key in (FC1.format(0), FC1.format(1), ROUTER):
        assert torch.equal(leaves[key], states["code"][key])


def test_a_routed_model_with_only_the_anchor_and_one_expert(experts):
    """A 2-slot state: the anchor FFN, expert 2's FFN and their router rows; its routing is the
    full model's with the other experts masked out (renormalised over the two)."""
    paths, states, anchor_ffn = experts
    routed = merge(paths, MergeSpec(strategy="mean"))
    routed[ROUTER] = torch.randn(4, 4)  # as fitted: every row moved
    only = with_only(routed, 2)
    assert set(only) == set(states["code"])
    assert torch.equal(only[FC1.format(0)], anchor_ffn)
    assert torch.equal(only[FC1.format(1)], states["code"][FC1.format(1)])
    assert torch.equal(only[EMB], routed[EMB])
    h = torch.randn(5, 4)
    full = torch.softmax(h @ routed[ROUTER].t(), dim=-1)[:, [0, 2]]
    assert torch.allclose(torch.softmax(h @ only[ROUTER].t(), dim=-1), full / full.sum(-1, keepdim=True))


def test_weighted_mean_and_base_plus_mean_delta(experts, tmp_path):
    paths, states, _ = experts
    out = merge(paths, MergeSpec(strategy="weighted_mean", weights={"math": 2, "code": 1, "safety": 1}))
    expected = (2 * states["math"][EMB] + states["code"][EMB] + states["safety"][EMB]) / 4
    assert torch.allclose(out[EMB], expected, atol=1e-6)
    base = torch.randn(10, 4)
    out = merge(paths, MergeSpec(strategy="base_plus_mean_delta", delta_scale=2.0), anchor=saved_anchor(tmp_path, base))
    mean = sum(s[EMB] for s in states.values()) / 3
    assert torch.allclose(out[EMB], base + 2 * (mean - base), atol=1e-5)
    with pytest.raises(MergeError, match="missing: \\['safety'\\]"):
        merge(paths, MergeSpec(strategy="weighted_mean", weights={"math": 1, "code": 1}))


def test_experts_from_another_anchor_are_named(experts, tmp_path):
    paths, _, _ = experts
    other, _ = expert(tmp_path, "tool_use", 9, torch.randn(6, 4))
    with pytest.raises(MergeError, match=f"expert 'tool_use': anchor FFN tensor {FC1.format(0)} differs"):
        merge({**paths, "tool_use": other}, MergeSpec(strategy="mean"))


def test_incompatible_configs_are_named(experts, tmp_path):
    paths, _, anchor_ffn = experts
    other, _ = expert(tmp_path, "tool_use", 9, anchor_ffn, tokenizer_sha256="other")
    with pytest.raises(MergeError, match="expert 'tool_use' has a different tokenizer_sha256 than 'math'"):
        check_compatible({**paths, "tool_use": other})
    deeper, _ = expert(tmp_path, "deeper", 9, anchor_ffn, arch=ARCH | {"num_layers": 2})
    with pytest.raises(MergeError, match="expert 'deeper' has a different arch than 'math'"):
        check_compatible({**paths, "deeper": deeper})
    # An expert trained by a newer bar records keys an older one did not (at their defaults): the same model.
    newer, _ = expert(tmp_path, "newer", 9, anchor_ffn, arch=ARCH | {"base": None})
    assert check_compatible({**paths, "newer": newer})["arch"] == ARCH
    dense, _ = expert(tmp_path, "dense", 9, anchor_ffn, kind="dense", num_experts=None)
    with pytest.raises(MergeError, match="expert 'dense' is not a 2-slot expert"):
        check_compatible({**paths, "dense": dense})


def test_the_stage_refuses_experts_of_another_anchor_before_any_mlflow_run(tmp_path):
    """merge_experts on experts branched from different anchors: one error line, exit 2, and
    no MLflow run (nor store) is created."""
    import shutil
    import subprocess
    import sys

    from conftest import ROOT, set_params

    shutil.copytree(ROOT / "specs", tmp_path / "specs")
    shutil.copy(ROOT / "params.yaml", tmp_path)
    set_params(tmp_path, preset="tiny", experts=["math", "code"])
    ffn = torch.randn(6, 4)
    (tmp_path / "outputs" / "train_expert").mkdir(parents=True)
    expert(tmp_path / "outputs" / "train_expert", "math", 0, ffn)
    expert(tmp_path / "outputs" / "train_expert", "code", 1, ffn, anchor_sha256="another anchor")
    proc = subprocess.run(
        [sys.executable, "-m", "bar.stages.merge_experts"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "error: outputs/train_expert/code/config.json: expert 'code' has a different anchor_sha256 than "
        "'math': another anchor != a; experts must be branched from the same anchor with the same tokenizer "
        "and architecture"
    ]
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "outputs" / "merge_experts").exists()


def test_disjoint_mean_averages_each_element_over_the_experts_that_changed_it(experts, tmp_path):
    """Every expert changes embedding rows of its own, rows it shares with one other expert and
    rows all three change; two rows no expert changes. Per element the merge is the anchor plus
    the mean change of the experts that changed it (written out row by row here)."""
    paths, states, _ = experts
    base = torch.randn(10, 4)
    anchor = saved_anchor(tmp_path, base)
    rows = {"math": [0, 3, 4, 6, 7], "code": [1, 3, 5, 6, 7], "safety": [2, 4, 5, 6, 7]}
    for name, changed_rows in rows.items():
        changed = base.clone()
        changed[changed_rows] = states[name][EMB][changed_rows]
        save_file({k: changed if k == EMB else t for k, t in states[name].items()}, paths[name] / "model.safetensors")
    m, c, s = (states[n][EMB] - base for n in ("math", "code", "safety"))  # each expert's change
    expected = torch.stack(
        [
            base[0] + m[0],
            base[1] + c[1],
            base[2] + s[2],  # one expert alone: its whole change
            base[3] + (m[3] + c[3]) / 2,
            base[4] + (m[4] + s[4]) / 2,  # two: their mean change
            base[5] + (c[5] + s[5]) / 2,
            base[6] + (m[6] + c[6] + s[6]) / 3,
            base[7] + (m[7] + c[7] + s[7]) / 3,  # all three: as `mean`
            base[8],
            base[9],
        ]
    )  # none: the anchor's
    out = merge(paths, MergeSpec(strategy="disjoint_mean"), anchor=anchor)
    assert torch.allclose(out[EMB], expected, rtol=0, atol=1e-6), (out[EMB] - expected).abs().max()
    assert torch.equal(out[EMB][8:], base[8:])
    # What `mean` keeps of an element one expert changed: a third of the change.
    assert torch.allclose(merge(paths, MergeSpec(strategy="mean"))[EMB][2], base[2] + s[2] / 3, atol=1e-6)
    with pytest.raises(MergeError, match="disjoint_mean needs the anchor"):
        merge(paths, MergeSpec(strategy="disjoint_mean"))


def test_an_anchor_ffn_an_expert_trained_is_combined_as_a_shared_tensor(experts, tmp_path):
    """The ablation that trains slot 0: an expert that says so (`anchor_ffn_trained`) is merged
    with slot 0 combined by the strategy, from the anchor's dense FFN for the strategies that
    combine changes; one that does not say so is still refused."""
    paths, states, anchor_ffn = experts
    trained = anchor_ffn + torch.randn(6, 4)
    save_file({**states["code"], FC1.format(0): trained}, paths["code"] / "model.safetensors")
    with pytest.raises(MergeError, match="anchor FFN tensor .* differs"):
        merge(paths, MergeSpec(strategy="mean"))
    config = json.loads((paths["code"] / "config.json").read_text())
    (paths["code"] / "config.json").write_text(json.dumps({**config, "anchor_ffn_trained": True}))
    out = merge(paths, MergeSpec(strategy="mean"))
    assert torch.allclose(out[FC1.format(0)], (2 * anchor_ffn + trained) / 3, atol=1e-6)
    assert torch.equal(out[FC1.format(2)], states["code"][FC1.format(1)])  # its own FFN as before
    leaves = with_merged_shared(states["math"], out)  # as the merge leaves an expert: the merged slot 0
    assert torch.equal(leaves[FC1.format(0)], out[FC1.format(0)]) and not torch.equal(leaves[FC1.format(0)], anchor_ffn)
    (tmp_path / "anchor").mkdir()
    dense = "decoder.layers.0.mlp.linear_fc1.weight"
    save_file({EMB: torch.randn(10, 4), dense: anchor_ffn}, tmp_path / "anchor" / "model.safetensors")
    out = merge(paths, MergeSpec(strategy="disjoint_mean"), anchor=tmp_path / "anchor")
    assert torch.allclose(out[FC1.format(0)], trained, atol=1e-6)  # the one expert that changed it: its change


def test_ties_trims_each_change_elects_a_sign_and_averages_the_changes_of_that_sign(experts, tmp_path):
    """Each expert's change keeps its largest `density` share; per element the sign of the
    kept changes' sum wins, and the anchor gets the mean of the kept changes of that sign
    (written out element by element here). With nothing trimmed and no sign conflict it is
    `disjoint_mean`."""
    paths, states, _ = experts
    base = torch.zeros(10, 4)
    anchor = saved_anchor(tmp_path, base)
    change = {  # (row, column): each expert's change of the embeddings; everything else unchanged
        "math": {(0, 0): 5.0, (1, 0): 2.0, (2, 0): 0.1, (3, 0): -4.0},
        "code": {(0, 0): 3.0, (1, 0): -6.0, (2, 1): 7.0, (3, 0): 1.0},
        "safety": {(0, 0): -1.0, (4, 0): 8.0, (5, 0): 0.2, (3, 0): -2.0},
    }
    for name, cells in change.items():
        emb = base.clone()
        for (r, c), v in cells.items():
            emb[r, c] = v
        save_file({**states[name], EMB: emb}, paths[name] / "model.safetensors")
    assert torch.equal(trimmed(torch.tensor([0.1, -3.0, 2.0, 0.5]), 0.5), torch.tensor([0.0, -3.0, 2.0, 0.0]))
    assert torch.equal(trimmed(torch.tensor([1.0, 2.0]), 1.0), torch.tensor([1.0, 2.0]))
    out = merge(paths, MergeSpec(strategy="ties", density=3 / 40), anchor=anchor)[EMB]  # 3 of 40 kept
    expected = base.clone()
    expected[0, 0] = (5.0 + 3.0) / 2  # +8 against -1: the mean of the positive changes
    expected[1, 0] = -6.0  # math's +2 (kept) against code's -6: negative wins, code's change alone
    expected[2, 1] = 7.0  # code alone
    expected[3, 0] = (-4.0 - 2.0) / 2  # code's +1 trimmed (its 4th largest): math's and safety's mean
    expected[4, 0] = 8.0  # safety alone; math's 0.1 and safety's 0.2 trimmed
    assert torch.allclose(out, expected, atol=1e-6), out - expected
    # Nothing trimmed and every element changed by one expert or by experts that agree: disjoint_mean.
    for name, cells in change.items():
        emb = base.clone()
        for (r, c), v in cells.items():
            emb[r, c] = abs(v)
        save_file({**states[name], EMB: emb}, paths[name] / "model.safetensors")
    full = merge(paths, MergeSpec(strategy="ties", density=1.0), anchor=anchor)[EMB]
    assert torch.allclose(full, merge(paths, MergeSpec(strategy="disjoint_mean"), anchor=anchor)[EMB], atol=1e-6)
    with pytest.raises(MergeError, match="ties needs the anchor"):
        merge(paths, MergeSpec(strategy="ties"))


def test_a_group_of_shared_tensors_can_have_a_strategy_of_its_own(experts, tmp_path):
    """`by_group`: the embeddings merged by one strategy, the other shared tensors (here the LM
    head) by `strategy`; a group's strategy that needs the anchor needs it."""
    paths, states, _ = experts
    head = "output_layer.weight"
    for i, name in enumerate(paths):
        save_file({**states[name], head: torch.full((10, 4), float(i))}, paths[name] / "model.safetensors")
    spec = MergeSpec(strategy="mean", by_group={"embeddings": "disjoint_mean"})
    with pytest.raises(MergeError, match="disjoint_mean needs the anchor"):
        merge(paths, spec)
    base = torch.randn(10, 4)
    (tmp_path / "anchor").mkdir()
    save_file({EMB: base, head: torch.zeros(10, 4)}, tmp_path / "anchor" / "model.safetensors")
    out = merge(paths, spec, anchor=tmp_path / "anchor")
    whole = merge(paths, MergeSpec(strategy="disjoint_mean"), anchor=tmp_path / "anchor")
    assert torch.equal(out[EMB], whole[EMB])  # the embeddings as disjoint_mean merges them
    assert torch.allclose(out[head], torch.full((10, 4), 1.0))  # the LM head: the mean of 0, 1 and 2
    assert torch.allclose(whole[head], torch.full((10, 4), 1.5))  # disjoint_mean: the two that changed it
    with pytest.raises(ValueError, match="weighted_mean needs weights"):
        MergeSpec(strategy="mean", by_group={"lm_head": "weighted_mean"})
