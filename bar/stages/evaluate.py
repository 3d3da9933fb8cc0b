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

The held-out splits are also written as lm-evaluation-harness tasks (outputs/evaluate/harness/),
and the tasks `specs/eval.yaml: harness` names run with lm-eval on every exported model.
"""

from __future__ import annotations

import csv
import json

from bar.files import atomic_dir, output, write_json, write_metrics
from bar.specs import Specs, spec_hash
from bar.stages import entry

STAGE = "evaluate"


def main() -> None:
    from bar import cost, figures, harness, parallel, tokenizer, tracking
    from bar.evaluation import PER_TOKEN, expert_gaps, load_moe, markdown, with_overall
    from bar.router import expert_choices, routing_shares
    from bar.scoring import eval_examples, score_all
    from bar.train import progress
    from bar.train.checkpoint import sha256

    specs = Specs()
    harness.require(specs.eval.harness)
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
        k = json.loads(output("fit_router", "config.json").read_text()).get("sequence_topk")
        # One tick per pass over a domain's held-out split: scoring, routing shares, expert choices.
        bar = progress(len(domains) * (3 + 2 * bool(k)) + 2 * len(experts), 0, STAGE)
        model, merged, config = load_moe(specs.model, output("merge_experts"))
        table["merged"] = score_all(model, tok, domains, specs.eval, config.get("sequence_topk"), bar)
        model, routed, config = load_moe(specs.model, output("fit_router"))
        table["routed"] = score_all(model, tok, domains, specs.eval, k, bar)
        examples = {d: eval_examples(d, specs.eval) for d in domains}
        routing, choices = {}, {}
        for d in domains:
            routing[d] = routing_shares(model, tok, examples[d])
            bar.update(1)
        if k:  # experts chosen per sequence: which served each domain, and the published per-token routing
            for d in domains:
                choices[d] = expert_choices(model, tok, examples[d], k)
                bar.update(1)
            table[PER_TOKEN] = score_all(model, tok, domains, specs.eval, progress=bar)
        own = {e: specs.expert(e).domain for e in experts}
        alone = {e: table[f"expert:{e}"] for e in experts}
        merge_cost = expert_gaps(specs.model, tok, own, alone, table["routed"], merged, routed, specs.eval, bar)
        bar.close()
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
            max_length = harness.write_tasks(out / "harness", domains, specs.eval, tok)
            exports = {"anchor": output("train_anchor", "hf")}
            exports |= {f"expert:{e}": output("train_expert", e, "hf") for e in experts}
            exports["routed"] = output("fit_router", "hf")
            harness_scores = harness.score_exports(
                exports, specs.eval.harness, out / "harness", max(specs.model.seq_length, max_length)
            )
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
            report = markdown(table, routing, experts, domains, assembly, merge_cost, choices)
            (out / "report.md").write_text(report + ("\n" + harness.markdown(harness_scores) if harness_scores else ""))
            figures.scores(table, domains, out / "scores.png")
            figures.routing(routing, experts, out / "routing.png")
            if curve:
                write_json(out / "cost_curve.json", curve)
                figures.cost_curve(curve, out / "cost_curve.png")
        summary = {k: assembly[k] for k in ("upgrade_flops", "retrain_flops", "upgrade_ratio") if k in assembly}
        write_metrics(
            STAGE,
            table
            | {"merge_cost": merge_cost}
            | ({"cost": summary} if summary else {})
            | ({"harness": harness_scores} if harness_scores else {}),
        )
        run.log_metrics({f"{m.replace(':', '.')}/{d}": v for m, s in table.items() for d, v in s.items()})
        run.log_metrics(
            {f"harness/{m.replace(':', '.')}/{k}": v for m, s in harness_scores.items() for k, v in s.items()}
        )
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
