"""Stage evaluate: every model on every domain's held-out split, and where the router sends tokens.

Models: the anchor, each expert alone, the merged MoE before router fitting, and the routed
MoE. The anchor's and experts' scores are the ones their own stages measured with the same
code and `specs/eval.yaml` (DVC re-runs those stages when the eval spec changes); the merged
and routed models are scored here, and so is each expert on its own domain as the merge
leaves it (its FFNs and router rows, the merged shared tensors) and the routed model with only
the anchor and that expert (every other expert masked out): an expert's gap to the routed model
splits into what merging the shared tensors costs, what the fitted router's split between the
anchor and the expert costs, and what the other experts' share costs. A routed model served
per sequence (`specs/router.yaml: sequence_topk`) is also scored with every expert per token
(the published recipe, row `routed_per_token`), and which expert served each domain's prompts
is recorded (choices.json). Writes
metrics/evaluate.json (DVC metrics), outputs/evaluate/{scores.csv, routing.csv} (DVC plots),
PNG plots, report.md and outcomes.json (whether each model passed each held-out prompt, from which
the report's paired standard errors come).

It also closes the assembly (merge + router + evaluation): from the routed model's lineage in
MLflow it logs what this upgrade cost against a monolithic retrain (`bar.cost.assembly`) and
the curve of both against the number of domains (cost_curve.png).
"""

from __future__ import annotations

import csv
import json

from bar.specs import Specs, spec_hash
from bar.stages import atomic_dir, entry, output, write_json, write_metrics

STAGE = "evaluate"
PER_TOKEN = "routed_per_token"  # the routed model with every expert per token, when it is served per sequence


def with_overall(scores: dict[str, float], domains: list[str]) -> dict[str, float]:
    out = {d: scores[d] for d in domains}
    out["overall"] = sum(out.values()) / len(domains)
    return out


def mean_shares(layers: list[list[float]]) -> list[float]:
    """Router probability per slot, averaged over layers (each layer: mean over tokens)."""
    return [sum(layer[e] for layer in layers) / len(layers) for e in range(len(layers[0]))]


def report(
    table: dict[str, dict[str, float]],
    routing: dict[str, list[list[float]]],
    experts: list[str],
    domains: list[str],
    assembly: dict,
    merge_cost: dict,
    choices: dict[str, list[float]],
) -> str:
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


def plot(table, routing, experts, domains, out) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(table)
    for i, (model, scores) in enumerate(table.items()):
        ax.bar(np.arange(len(domains) + 1) + i * width, [scores[d] for d in domains + ["overall"]], width, label=model)
    ax.set_xticks(np.arange(len(domains) + 1) + 0.4 - width / 2, domains + ["overall"])
    ax.set(ylabel="pass rate", ylim=(0, 100), title="held-out pass rate per domain")
    ax.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(out / "scores.png", dpi=100)
    plt.close(fig)

    slots = ["anchor", *experts]
    fig, axes = plt.subplots(1, len(routing), figsize=(3.2 * len(routing), 3), squeeze=False)
    for ax, (domain, layers) in zip(axes[0], routing.items()):
        ax.imshow(np.array(layers).T, vmin=0, vmax=1, cmap="viridis", aspect="auto")
        ax.set(title=domain, xlabel="layer", yticks=range(len(slots)), yticklabels=slots)
    fig.suptitle("routed model: router probability per expert and layer")
    fig.tight_layout()
    fig.savefig(out / "routing.png", dpi=100)
    plt.close(fig)


def main() -> None:
    from safetensors.torch import load_file

    from bar import cost, parallel, scoring, tokenizer, tracking
    from bar.merge import with_merged_shared, with_only
    from bar.model import build
    from bar.stages._training import eval_examples, score_all
    from bar.train.checkpoint import load_state, sha256

    specs = Specs()
    experts, domains = specs.params.experts, sorted(specs.data.domains)
    resolved = {"eval": specs.eval.model_dump(mode="json"), "experts": experts}
    with tracking.stage_run(
        STAGE,
        spec=resolved,
        tags={"spec_hash": spec_hash(resolved), "routed_hash": tracking.dvc_md5("outputs/fit_router")},
    ) as run:
        table = {"anchor": json.loads(output("train_anchor", "eval.json").read_text())}
        for e in experts:
            table[f"expert:{e}"] = json.loads(output("train_expert", e, "eval.json").read_text())
        parallel.init(1, specs.params.seed)
        tok = tokenizer.load(output("tokenizer"))
        routing, choices = {}, {}
        for name, stage in (("merged", "merge_experts"), ("routed", "fit_router")):
            config = json.loads(output(stage, "config.json").read_text())
            model = build(specs.model, 1, num_experts=config["num_experts"], topk=config.get("topk"))
            state = load_file(output(stage, "model.safetensors"))
            load_state(model, state)
            if name == "merged":
                merged = state  # also what each expert is scored with below
            k = config.get("sequence_topk")
            table[name] = score_all(model, tok, domains, specs.eval, k)
            if name == "routed":
                routed = state  # each expert's domain is also scored with only it and the anchor below
                examples = {d: eval_examples(d, specs.eval) for d in domains}
                routing = {d: scoring.routing_shares(model, tok, examples[d]) for d in domains}
                if k:  # experts chosen per sequence: which served each domain, and the published per-token routing
                    choices = {d: scoring.expert_choices(model, tok, examples[d], k) for d in domains}
                    table[PER_TOKEN] = score_all(model, tok, domains, specs.eval)
        merge_cost = {}
        for slot, e in enumerate(experts, start=1):
            domain = specs.expert(e).domain
            model = build(specs.model, 1, num_experts=2)
            load_state(model, with_merged_shared(load_file(output("train_expert", e, "model.safetensors")), merged))
            merged_shared = score_all(model, tok, [domain], specs.eval)[domain]["pass_rate"]
            load_state(model, with_only(routed, slot))
            alone, routed_score = table[f"expert:{e}"][domain], table["routed"][domain]
            merge_cost[e] = {
                "domain": domain,
                "alone": alone["pass_rate"],
                "merged_shared": merged_shared,
                "own_only": score_all(model, tok, [domain], specs.eval)[domain]["pass_rate"],
                "routed": routed_score["pass_rate"],
                # routed - alone, paired per prompt (an expert scored before outcomes were kept: None)
                "gap_se": scoring.paired_se(alone["correct"], routed_score["correct"]) if "correct" in alone else None,
            }
        parallel.shutdown()
        samples = {m: {d: s[d]["samples"] for d in domains} for m, s in table.items()}
        outcomes = {
            m: {d: [int(c) for c in s[d]["correct"]] for d in domains}
            for m, s in table.items()
            if all("correct" in s[d] for d in domains)
        }
        table = {m: with_overall({d: s[d]["pass_rate"] for d in domains}, domains) for m, s in table.items()}

        # The routed model's registry version and what it cost against a monolithic retrain.
        moe = tracking.model_version_with("bar-moe", "sha256", sha256(output("fit_router", "model.safetensors")))
        assembly, curve = {}, []
        if moe is not None:
            lineage = tracking.routed_lineage(moe.version)
            assembly = cost.assembly(specs.model, lineage)
            curve = cost.curve(specs.model, lineage) if assembly else []

        with atomic_dir(output(STAGE)) as out:
            with open(out / "scores.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["model", "domain", "pass_rate"])
                w.writerows([m, d, round(s[d], 2)] for m, s in table.items() for d in domains + ["overall"])
            with open(out / "routing.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["domain", "layer", "expert", "share"])
                w.writerows(
                    [d, i, (["anchor", *experts])[e], round(p, 4)]
                    for d, layers in routing.items()
                    for i, layer in enumerate(layers)
                    for e, p in enumerate(layer)
                )
            write_json(out / "routing.json", routing)
            if choices:
                write_json(out / "choices.json", choices)  # {domain: [share of prompts per slot]}
            write_json(out / "samples.json", samples)
            write_json(out / "outcomes.json", outcomes)  # 1/0 per held-out prompt, in the eval split's order
            (out / "report.md").write_text(report(table, routing, experts, domains, assembly, merge_cost, choices))
            plot(table, routing, experts, domains, out)
            if curve:
                write_json(out / "cost_curve.json", curve)
                cost.plot_curve(curve, out / "cost_curve.png")
        summary = {k: assembly[k] for k in ("upgrade_flops", "retrain_flops", "upgrade_ratio") if k in assembly}
        write_metrics(STAGE, table | {"merge_cost": merge_cost} | ({"cost": summary} if summary else {}))
        run.log_metrics({f"{m.replace(':', '.')}/{d}": v for m, s in table.items() for d, v in s.items()})
        run.log_metrics(
            {
                f"{k}/{e}": row[k]
                for e, row in merge_cost.items()
                for k in ("merged_shared", "own_only", "gap_se")
                if row[k] is not None
            }
        )
        for name in (
            "report.md",
            "scores.png",
            "routing.png",
            "scores.csv",
            "routing.csv",
            "cost_curve.png",
            "outcomes.json",
            "choices.json",
        ):
            if output(STAGE, name).exists():
                run.log_artifact(output(STAGE, name))
        if moe is not None:
            # The registry's routed model carries its scores (what `bar compare` and promotion read).
            tracking.tag_model_version(
                "bar-moe", moe.version, {f"eval.{d}": round(v, 2) for d, v in table["routed"].items()}
            )
            run.set_tags({"moe_version": moe.version, **({"assembly.rerun": assembly["rerun"]} if assembly else {})})
            run.log_metrics({f"assembly/{k}": v for k, v in assembly.items() if k != "rerun"})


if __name__ == "__main__":
    entry(main)
