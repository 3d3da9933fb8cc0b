"""`bar plan`: parameter counts of models built on the meta device, and memory per rank."""

import sys

import pytest

from conftest import ROOT, run


@pytest.fixture(scope="module")
def olmo(megatron):
    from bar import plan

    arch = plan.example_arch("olmo2-7b", "bf16", None)
    return arch, {
        n: plan.count(arch, n, groups)
        for n, groups in (
            (None, None),
            (2, ["domain_ffn", "router", "embeddings", "lm_head", "attention", "norms"]),
            (5, ["router"]),
        )
    }


def test_an_olmo2_7b_shape_counts_as_the_design_computes_it_by_hand(olmo):
    arch, counts = olmo
    h, f, v, layers = 4096, 11008, 100352, 32
    # Per layer: attention, FFN, and OLMo 2's norms: after the attention and the MLP, and QK-norm over
    # the whole query and key projections (32 key/value heads: h each).
    dense = layers * (4 * h * h + 3 * h * f + 4 * h) + 2 * v * h + h
    assert counts[None].total == dense  # 7.30B
    assert counts[2].total == dense + layers * (3 * h * f + 2 * h)  # one more FFN and a 2-row router: 11.63B
    assert counts[5].total == dense + layers * (4 * 3 * h * f + 5 * h)  # 24.61B
    assert counts[2].trained == counts[2].total - layers * 3 * h * f  # all but the anchor's FFN (RLVR)
    assert counts[5].trained == layers * 5 * h  # router fit: the routers only


def test_memory_per_rank_follows_precision_tensor_and_data_parallelism(olmo):
    from bar import plan

    arch, counts = olmo
    rlvr = counts[2]
    one = plan.memory(arch, rlvr, 4096, 2)
    assert one["weights"] == rlvr.total * 2 and one["gradients"] == rlvr.trained * 4
    assert one["main weights"] == rlvr.trained * 4 and one["optimizer"] == rlvr.trained * 8
    # DESIGN.md, by hand: ~140 GB before activations on one rank.
    assert 135e9 < one["total"] - one["activations"] < 145e9
    tp2 = plan.memory(arch, rlvr, 4096, 2, tp=2)
    shared = rlvr.replicated * 2  # norms: replicated, not split
    assert tp2["weights"] == pytest.approx((one["weights"] - shared) / 2 + shared)
    assert tp2["activations"] < 0.6 * one["activations"]
    dp4 = plan.memory(arch, rlvr, 4096, 2, tp=2, dp=4)
    assert dp4["optimizer"] == pytest.approx(tp2["optimizer"] / 4) and dp4["weights"] == tp2["weights"]
    fp32 = plan.memory(arch.model_copy(update={"precision": "fp32"}), rlvr, 4096, 2)
    assert fp32["weights"] == 2 * one["weights"] and fp32["main weights"] == 0
    # Recomputation keeps each layer's input (h per token) and one layer's activations at a time.
    recompute = plan.memory(arch.model_copy(update={"recompute": True}), rlvr, 4096, 2)
    assert recompute["activations"] < 0.2 * one["activations"]
    assert {k: v for k, v in recompute.items() if k not in ("activations", "total")} == {
        k: v for k, v in one.items() if k not in ("activations", "total")
    }


@pytest.mark.slow
def test_bar_plan_prints_each_stage_of_the_specs_and_a_7b_example_against_a_gpu(tmp_path):
    out = run([sys.executable, "-m", "bar.cli", "plan"], ROOT).stdout
    assert "train_expert@math sft (tp 1)" in out and "fit_router (tp 1)" in out
    big = run(
        [
            sys.executable,
            "-m",
            "bar.cli",
            "plan",
            "--model",
            "olmo2-7b",
            "--tp",
            "2",
            "--dp",
            "4",
            "--gpu-memory",
            "80",
        ],
        ROOT,
    ).stdout
    rows = {line.split("  ")[0]: line for line in big.splitlines()}
    assert rows["expert (2 slots), RLVR"].split()[4] == "11.63B" and rows["expert (2 slots), RLVR"].endswith("yes")
    assert (
        run([sys.executable, "-m", "bar.cli", "plan", "--model", "olmo2-7b", "--gpu-memory", "80"], ROOT)
        .stdout.splitlines()[-2]
        .endswith("NO")
    )
