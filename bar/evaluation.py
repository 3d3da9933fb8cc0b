"""What the evaluate stage computes beyond each model's scores (`bar.scoring`): where an
expert's score goes in the assembly, the overall score, the mean routing, and its report.md.

Light to import (torch only inside functions): `bar report` reads the same tables.
"""

from __future__ import annotations

import json
from pathlib import Path

from bar.files import output
from bar.specs import EvalSpec, ModelSpec

PER_TOKEN = "routed_per_token"  # the routed model with every expert per token, when it is served per sequence


def paired_se(a: list[bool], b: list[bool]) -> float:
    """Standard error (points) of the difference of two pass rates on the same prompts: how far
    `mean(b) - mean(a)` could move on another held-out set of this size. Only the prompts where
    the two models disagree contribute, so it is smaller than either score's own error."""
    if len(a) != len(b) or len(a) < 2:
        raise ValueError(f"paired_se needs two outcome lists of one length >= 2, got {len(a)} and {len(b)}")
    d = [int(y) - int(x) for x, y in zip(a, b)]
    mean = sum(d) / len(d)
    var = sum((v - mean) ** 2 for v in d) / (len(d) - 1)
    return 100.0 * (var / len(d)) ** 0.5


def with_overall(scores: dict[str, float], domains: list[str]) -> dict[str, float]:
    """The domains' scores and their mean, `overall`."""
    out = {d: scores[d] for d in domains}
    out["overall"] = sum(out.values()) / len(domains)
    return out


def mean_shares(layers: list[list[float]]) -> list[float]:
    """Router probability per slot, averaged over layers (each layer: mean over tokens)."""
    return [sum(layer[e] for layer in layers) / len(layers) for e in range(len(layers[0]))]


def load_moe(arch: ModelSpec, folder: Path):
    """(model, state, config) of a published MoE (merge_experts', fit_router's) at TP=1."""
    from safetensors.torch import load_file

    from bar.model import build
    from bar.train.checkpoint import load_state

    config = json.loads((folder / "config.json").read_text())
    model = build(arch, 1, num_experts=config["num_experts"], topk=config.get("topk"))
    state = load_file(folder / "model.safetensors")
    load_state(model, state)
    return model, state, config


def expert_gaps(
    arch: ModelSpec,
    tok,
    experts: dict[str, str],
    alone: dict[str, dict],
    routed: dict,
    merged_state: dict,
    routed_state: dict,
    spec: EvalSpec,
    progress=None,
) -> dict[str, dict]:
    """Where each expert's score on its own domain goes in the assembly (`experts`: {name:
    domain}, in slot order): alone (`alone[name]`, its own stage's scores), as the merge leaves
    it (its FFNs and router rows, the merged shared tensors), in the routed model with only the
    anchor and it (every other expert masked out), and in the routed model (`routed`'s scores);
    with the paired standard error of routed - alone."""
    from safetensors.torch import load_file

    from bar.merge import with_merged_shared, with_only
    from bar.model import build
    from bar.scoring import score_all
    from bar.train.checkpoint import load_state

    gaps = {}
    for slot, (e, domain) in enumerate(experts.items(), start=1):
        model = build(arch, 1, num_experts=2)
        load_state(model, with_merged_shared(load_file(output("train_expert", e, "model.safetensors")), merged_state))
        merged_shared = score_all(model, tok, [domain], spec, progress=progress)[domain]["pass_rate"]
        load_state(model, with_only(routed_state, slot))
        own, in_routed = alone[e][domain], routed[domain]
        gaps[e] = {
            "domain": domain,
            "alone": own["pass_rate"],
            "merged_shared": merged_shared,
            "own_only": score_all(model, tok, [domain], spec, progress=progress)[domain]["pass_rate"],
            "routed": in_routed["pass_rate"],
            # routed - alone, paired per prompt (an expert scored before outcomes were kept: None)
            "gap_se": paired_se(own["correct"], in_routed["correct"]) if "correct" in own else None,
        }
    return gaps


def markdown(
    table: dict[str, dict[str, float]],
    routing: dict[str, list[list[float]]],
    experts: list[str],
    domains: list[str],
    assembly: dict,
    merge_cost: dict,
    choices: dict[str, list[float]],
) -> str:
    """report.md: scores, routing, where each expert's score goes, cost."""
    cols = domains + ["overall"]
    lines = [
        "# Evaluation",
        "",
        "Pass rate (0-100) of greedy replies on each domain's held-out prompts.",
        "",
        "| model | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for model, scores in table.items():
        lines.append(f"| {model} | " + " | ".join(f"{scores[c]:.1f}" for c in cols) + " |")
    slots = ["anchor", *experts]
    lines += [
        "",
        "## Routing",
        "",
        "Share of router probability per expert (mean over layers and tokens), by the domain of the input.",
        "",
        "| domain | " + " | ".join(slots) + " |",
        "|---" * (len(slots) + 1) + "|",
    ]
    for domain, layers in routing.items():
        lines.append(f"| {domain} | " + " | ".join(f"{100 * m:.1f}%" for m in mean_shares(layers)) + " |")
    if choices:
        lines += [
            "",
            "Experts chosen per sequence (`specs/router.yaml: sequence_topk`): share of each domain's "
            "held-out prompts each expert served (the anchor serves all).",
            "",
            "| domain | " + " | ".join(experts) + " |",
            "|---" * (len(experts) + 1) + "|",
        ]
        for domain, shares in choices.items():
            lines.append(f"| {domain} | " + " | ".join(f"{100 * c:.1f}%" for c in shares[1:]) + " |")
    lines += [
        "",
        "## Where an expert's score goes",
        "",
        "Each expert on its own domain: alone, with the merged shared tensors (its own FFNs and router "
        "rows; no other expert), the routed model with only the anchor and this expert (the others "
        "masked out), and the routed model; routed - alone with its paired standard error (what the "
        "gap could move on another held-out set of this size).",
        "",
        "| expert | domain | alone | merged shared tensors | routed, anchor + own only | routed | routed - alone |",
        "|---" * 7 + "|",
    ]
    for e, row in merge_cost.items():
        se = "" if row.get("gap_se") is None else f" ± {row['gap_se']:.1f}"
        lines.append(
            f"| {e} | {row['domain']} | {row['alone']:.1f} | {row['merged_shared']:.1f} | "
            f"{row['own_only']:.1f} | {row['routed']:.1f} | {row['routed'] - row['alone']:.1f}{se} |"
        )
    if assembly:
        lines += [
            "",
            "## Cost",
            "",
            f"Re-run for this routed model: {assembly['rerun'].replace(',', ', ')}.",
            "",
            "| | training FLOPs |",
            "|---|---|",
            f"| this upgrade | {assembly['upgrade_flops']:.3g} |",
            f"| monolithic retrain (estimated) | {assembly['retrain_flops']:.3g} |",
            f"| ratio | {assembly['upgrade_ratio']:.3f} |",
            "",
            "![cost of adding the k-th domain](cost_curve.png)",
        ]
    return "\n".join(lines) + "\n"
