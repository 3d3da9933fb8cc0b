"""bar.evaluation: the overall score, the paired standard error, the mean routing and report.md (expert_gaps and load_moe
run in the pipeline tests, on real models)."""

import math

import pytest

from bar.evaluation import markdown, mean_shares, paired_se, with_overall


def test_overall_is_the_mean_of_the_named_domains_only():
    scores = {"math": 80.0, "code": 40.0, "extra": 0.0}
    assert with_overall(scores, ["math", "code"]) == {"math": 80.0, "code": 40.0, "overall": 60.0}
    with pytest.raises(KeyError):
        with_overall(scores, ["math", "safety"])


def test_paired_se_counts_only_the_prompts_where_the_models_disagree():
    same = [True, False] * 50
    assert paired_se(same, same) == 0.0
    # One model flips 10 of 100 prompts from wrong to right: d is 1 on 10 prompts, 0 elsewhere.
    better = [True] * 60 + [False] * 40
    worse = [True] * 50 + [False] * 50
    var = (10 * 0.9**2 + 90 * 0.1**2) / 99
    assert paired_se(worse, better) == pytest.approx(100 * math.sqrt(var / 100))
    # Agreement on the other prompts does not matter; the same flips among 400 prompts halve it.
    assert paired_se(worse * 4, better * 4) < paired_se(worse, better) / 1.9
    with pytest.raises(ValueError, match="one length"):
        paired_se([True], [True, False])


def test_mean_shares_average_each_slot_over_layers():
    assert mean_shares([[0.5, 0.5, 0.0], [0.7, 0.1, 0.2]]) == pytest.approx([0.6, 0.3, 0.1])


def test_report_has_each_models_scores_the_routing_the_gaps_and_the_cost():
    table = {
        "anchor": {"math": 10.0, "code": 20.0, "overall": 15.0},
        "routed": {"math": 90.0, "code": 70.0, "overall": 80.0},
    }
    routing = {"math": [[0.2, 0.8, 0.0]], "code": [[0.1, 0.0, 0.9]]}
    gaps = {
        "math": {
            "domain": "math",
            "alone": 92.0,
            "merged_shared": 88.0,
            "own_only": 91.0,
            "routed": 90.0,
            "gap_se": 1.5,
        },
        "code": {
            "domain": "code",
            "alone": 70.0,
            "merged_shared": 69.0,
            "own_only": 70.0,
            "routed": 70.0,
            "gap_se": None,
        },
    }
    assembly = {
        "rerun": "merge_experts,fit_router",
        "upgrade_flops": 1.0e12,
        "retrain_flops": 4.0e12,
        "upgrade_ratio": 0.25,
    }
    text = markdown(table, routing, ["math", "code"], ["math", "code"], assembly, gaps, {"math": [1.0, 0.75, 0.25]})
    lines = text.splitlines()
    assert "| model | math | code | overall |" in lines and "| routed | 90.0 | 70.0 | 80.0 |" in lines
    assert "| domain | anchor | math | code |" in lines and "| math | 20.0% | 80.0% | 0.0% |" in lines
    assert "| math | 75.0% | 25.0% |" in lines  # experts chosen per sequence: the anchor's column left out
    assert "| math | math | 92.0 | 88.0 | 91.0 | 90.0 | -2.0 ± 1.5 |" in lines
    assert "| code | code | 70.0 | 69.0 | 70.0 | 70.0 | 0.0 |" in lines  # no standard error kept
    assert "Re-run for this routed model: merge_experts, fit_router." in lines and "| ratio | 0.250 |" in lines
    bare = markdown(table, routing, ["math", "code"], ["math", "code"], {}, {}, {})
    assert "## Cost" not in bare and "Experts chosen per sequence" not in bare
