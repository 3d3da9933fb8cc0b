"""The `bar` command. Imports stay lazy: `bar --help` and `bar validate` load no torch,
mlflow or megatron."""

from __future__ import annotations

import argparse
import sys


def _validate(args) -> int:
    from bar.specs import SpecError, Specs

    try:
        specs = Specs(args.root)
        specs.validate_all()
        specs.train  # cross-file checks (tp_size against the architecture)
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"specs OK (preset {specs.params.preset}, experts: {', '.join(specs.params.experts) or 'none'})")
    return 0


def _routed_changes(history: list[dict], domains: list[str], root) -> list[tuple[str, list[str]]]:
    """Per domain, each version's routed score minus the previous version's, with the paired
    standard error over the same held-out prompts ("+2.5±2.2"); "-" where the two were not
    scored on the same prompts."""
    if len(history) < 2:
        return []
    from bar import tracking
    from bar.evaluation import paired_se

    outcomes = [tracking.routed_outcomes(h["moe_versions"][-1], root) if h["moe_versions"] else None for h in history]

    def change(before, after, d) -> str:
        if not before or not after or before[0] != after[0]:
            return "-"
        a, b = before[1].get(d), after[1].get(d)
        if not a or not b or len(a) != len(b) or len(a) < 2:
            return "-"
        return f"{100 * (sum(b) - sum(a)) / len(a):+.1f}±{paired_se(a, b):.1f}"

    return [
        (f"routed {d} vs previous", ["-", *(change(x, y, d) for x, y in zip(outcomes, outcomes[1:]))]) for d in domains
    ]


def _compare(args) -> int:
    """An expert's versions side by side: what changed in its spec, its scores, the routed
    models built from it, and its cost."""
    from bar import tracking

    history = tracking.expert_history(args.expert, args.root)
    if not history:
        print(
            f"error: no finished runs of expert {args.expert!r} in {tracking.shown_uri(args.root)}; "
            "run `dvc repro` first",
            file=sys.stderr,
        )
        return 2
    heads = [f"v{h['version']} {h['run_id'][:8]}" for h in history]
    keys = sorted({k for h in history for k in h["params"]})
    changed = [k for k in keys if len({h["params"].get(k) for h in history}) > 1]
    domains = sorted({k.removeprefix("eval/") for h in history for k in h["metrics"] if k.startswith("eval/")})
    rows = [(f"spec {k.removeprefix('expert.')}", [h["params"].get(k, "-") for h in history]) for k in changed]
    rows += [(f"expert {d}", [_num(h["metrics"].get(f"eval/{d}")) for h in history]) for d in domains]
    rows += [(f"routed {d}", [_num(h["routed"].get(d)) for h in history]) for d in [*domains, "overall"]]
    rows += _routed_changes(history, domains, args.root)
    rows += [
        ("bar-moe versions", [",".join(map(str, h["moe_versions"])) or "-" for h in history]),
        ("cost tokens", [_num(h["metrics"].get("cost/tokens"), "{:.0f}") for h in history]),
        ("cost FLOPs", [_num(h["metrics"].get("cost/flops"), "{:.3g}") for h in history]),
        ("cost wall s", [_num(h["metrics"].get("cost/wall_seconds"), "{:.0f}") for h in history]),
        # Floating-point results depend on it: compare versions trained alike.
        ("threads per rank", [h["threads"] for h in history]),
    ]
    width = max(len(r[0]) for r in rows)
    cols = [max(len(heads[i]), *(len(str(r[1][i])) for r in rows)) for i in range(len(history))]
    print(f"expert {args.expert}: {len(history)} runs ({tracking.shown_uri(args.root)})")
    print(" " * width + "  " + "  ".join(h.rjust(c) for h, c in zip(heads, cols)))
    for label, values in rows:
        print(label.ljust(width) + "  " + "  ".join(str(v).rjust(c) for v, c in zip(values, cols)))
    return 0


def _lineage(args) -> int:
    """A registered model version and everything it was built from."""
    from bar import tracking

    name, _, version = args.version.rpartition("/")
    name = name or "bar-moe"
    try:
        info = tracking.model_lineage(name, version, args.root)
    except LookupError as e:
        print(
            f"error: no model version {name}/{version} in {tracking.shown_uri(args.root)} "
            f"({e}); `bar lineage <version>` is a bar-moe version, "
            "`bar lineage bar-expert-<name>/<version>` an expert's",
            file=sys.stderr,
        )
        return 2
    aliases = f" (aliases: {', '.join(info['aliases'])})" if info["aliases"] else ""
    print(f"{name} version {info['version']}{aliases}")
    if "components" in info["tags"]:
        print(f"  components: {info['tags']['components']}")
    _print_run("built by", info["run"])
    for expert, run in info["components"].items():
        v = info["tags"].get(f"expert.{expert}.model_version", "?")
        _print_run(f"expert {expert} (bar-expert-{expert} v{v})", run)
    if info["evaluation"]:
        ev = info["evaluation"]
        print(f"  evaluated by run {ev['run_id']}")
        scores = {k.removeprefix("routed/"): v for k, v in ev.items() if k.startswith("routed/")}
        print("    routed scores: " + ", ".join(f"{d} {v:.1f}" for d, v in sorted(scores.items())))
        if "assembly/upgrade_ratio" in ev:
            print(
                f"    re-run for it: {ev['rerun']}; training FLOPs {ev['assembly/upgrade_flops']:.3g} vs "
                f"{ev['assembly/retrain_flops']:.3g} for a monolithic retrain "
                f"(ratio {ev['assembly/upgrade_ratio']:.3f})"
            )
    return 0


def _report(args) -> int:
    """The report: scores of every model and baseline, upgrades, cost, plots."""
    from bar import report
    from bar.specs import InputError

    try:
        path = report.build(args.root, readme=args.readme)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}" + (" and the README table" if args.readme else ""))
    return 0


def _humaneval(args) -> int:
    """HumanEval pass@1 of a published model (bar.humaneval), decoded as evaluate decodes it."""
    import json
    import os
    from pathlib import Path

    from bar import humaneval, parallel, tokenizer
    from bar.evaluation import load_moe
    from bar.specs import Specs

    os.chdir(args.root)
    folder = Path("outputs") / args.model
    if not (folder / "config.json").is_file():
        print(f"error: {folder}: no published model (config.json); run `dvc repro` first", file=sys.stderr)
        return 2
    problems = humaneval.problems(args.limit)
    specs = Specs()
    config = json.loads((folder / "config.json").read_text())
    parallel.init(1, specs.params.seed)
    try:
        if config["kind"] == "moe":
            model = load_moe(specs.model, folder)[0]
        else:
            from safetensors.torch import load_file

            from bar.model import build
            from bar.train.checkpoint import load_state

            model = build(specs.model, 1)
            load_state(model, load_file(folder / "model.safetensors"))
        tok = tokenizer.load(Path("outputs") / "tokenizer")
        result = humaneval.score(model, tok, problems, args.max_new_tokens, config.get("sequence_topk"))
    finally:
        parallel.shutdown()
    print(
        f"humaneval {args.model}: pass@1 {result['pass@1']:.1f}% ({len(result['passed'])} of {result['num_problems']})"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


def _ablate(args) -> int:
    """Ablations of the routed model (bar.ablate): run them, then the table."""
    from pathlib import Path

    from bar import ablate
    from bar.specs import InputError

    root = Path(args.root).resolve()
    try:
        done = {} if args.report_only else ablate.run(root, args.names, args.jobs)
        text = ablate.report(root)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text, end="")
    print(f"wrote {root / ablate.REPORT}", file=sys.stderr)
    return 1 if any(d["returncode"] for d in done.values()) else 0


def _plan(args) -> int:
    """Memory per rank of each training stage (bar.plan), for the specs or a bigger model."""
    from bar import parallel, plan
    from bar.specs import GROUPS, SpecError, Specs

    rows = []
    parallel.init(1, 0)
    try:
        if args.model:
            arch = plan.example_arch(args.model, args.precision, args.seq_length)
            experts = args.experts
            print(
                f"{args.model}: {arch.num_layers} layers, hidden {arch.hidden_size}, FFN {arch.ffn_hidden_size}, "
                f"vocabulary {arch.vocab_size}, {arch.precision}; micro-batch {args.micro_batch} x "
                f"{arch.seq_length} tokens; per rank at tp {args.tp}, dp {args.dp} (a distributed optimizer "
                f"shards main weights and AdamW over dp)"
            )
            tokens = args.micro_batch * arch.seq_length
            for name, n, groups in (
                ("dense", None, None),
                ("expert (2 slots), SFT", 2, ["domain_ffn", "router", "embeddings", "lm_head"]),
                ("expert (2 slots), RLVR", 2, [g for g in GROUPS if g != "anchor_ffn"]),
                (f"routed ({experts + 1} slots), router fit", experts + 1, ["router"]),
            ):
                counts = plan.count(arch, n, groups)
                rows.append((name, plan.memory(arch, counts, tokens, n, None, args.tp, args.dp), counts.total))
        else:
            specs = Specs(args.root)
            arch = specs.model
            print(
                f"specs of {specs.root.resolve()} (preset {specs.params.preset}, {arch.precision}): per rank, "
                f"at each stage's tp and batch"
            )
            for name, n, topk, groups, tokens, tp in plan.stages(specs):
                counts = plan.count(arch, n, groups)
                rows.append((f"{name} (tp {tp})", plan.memory(arch, counts, tokens, n, topk, tp), counts.total))
    except SpecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        parallel.shutdown()
    print(plan.table(rows, args.gpu_memory))
    return 0


def _print_run(title: str, run: dict) -> None:
    print(f"  {title}: run {run['run_id']} [{run['status']}]")
    for k, v in run["tags"].items():
        print(f"    {k}: {v}")
    for path, digest in sorted(run["inputs"].items()):
        print(f"    input {path}: md5 {digest}")
    if "cost/flops" in run["cost"]:
        print(
            f"    cost: {run['cost'].get('cost/tokens', 0):.0f} tokens, {run['cost']['cost/flops']:.3g} FLOPs, "
            f"{run['cost'].get('cost/wall_seconds', 0):.0f} s wall"
        )


def _num(value, fmt: str = "{:.1f}") -> str:
    return "-" if value is None or value != value else fmt.format(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bar",
        description="Branch-Adapt-Route: modular post-training of language models. Run the pipeline with `dvc repro`.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="validate params.yaml and every spec (fast, no training imports)")
    p.add_argument("--root", default=".", help="repository root (default: .)")
    p.set_defaults(func=_validate)
    p = sub.add_parser("compare", help="an expert's versions side by side (spec diff, scores, cost) from MLflow")
    p.add_argument("expert", help="expert name, as in specs/experts/<expert>.yaml")
    p.add_argument("--root", default=".", help="repository root (default: .)")
    p.set_defaults(func=_compare)
    p = sub.add_parser("lineage", help="what a registered model version was built from (runs, data, cost)")
    p.add_argument(
        "version", help="a bar-moe version (e.g. 2) or <registered model>/<version> (e.g. bar-expert-code/1)"
    )
    p.add_argument("--root", default=".", help="repository root (default: .)")
    p.set_defaults(func=_lineage)
    p = sub.add_parser(
        "report",
        help="reports/report.md (another preset's: reports/<preset>/): every model and baseline per domain, "
        "upgrades, cost, plots",
    )
    p.add_argument("--readme", action="store_true", help="also rewrite the table in README.md (default preset only)")
    p.add_argument("--root", default=".", help="repository root (default: .)")
    p.set_defaults(func=_report)
    p = sub.add_parser(
        "humaneval", help="HumanEval pass@1 of a published model, offline, its code run in bar's sandbox"
    )
    p.add_argument(
        "--model",
        default="fit_router",
        help="an outputs/ folder: fit_router (default), train_anchor, train_expert/<expert>, ...",
    )
    p.add_argument("--limit", type=int, help="the first N of the 164 problems")
    p.add_argument("--max-new-tokens", type=int, default=256, help="reply length (default 256)")
    p.add_argument("--json", help="also write the result (pass@1, the problems passed, samples) to this file")
    p.add_argument("--root", default=".", help="repository root (default: .)")
    p.set_defaults(func=_humaneval)
    p = sub.add_parser(
        "plan",
        help="memory per rank of each training stage (weights, gradients, optimizer, "
        "activations), from models built on the meta device",
    )
    p.add_argument(
        "--model",
        help="instead of the specs: a transformers config.json or an example (olmo2-7b), "
        "shown as a dense model, a 2-slot expert and a routed model",
    )
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16"], help="with --model (default bf16)")
    p.add_argument("--tp", type=int, default=1, help="with --model: tensor-parallel size")
    p.add_argument("--dp", type=int, default=1, help="with --model: data-parallel size (distributed optimizer)")
    p.add_argument("--micro-batch", type=int, default=1, help="with --model: sequences per micro-batch")
    p.add_argument("--seq-length", type=int, help="with --model: tokens per sequence (default: the config's)")
    p.add_argument("--experts", type=int, default=4, help="with --model: experts of the routed model (default 4)")
    p.add_argument("--gpu-memory", type=float, help="GB per device: say whether each stage fits")
    p.add_argument("--root", default=".", help="repository root (default: .)")
    p.set_defaults(func=_plan)
    p = sub.add_parser(
        "ablate",
        help="re-run the pipeline with one thing changed (specs/ablations.yaml), each in its own "
        "workspace, and write reports/ablations.md: what each change costs or gains per domain",
    )
    p.add_argument("names", nargs="*", help="ablations to run (default: every one in specs/ablations.yaml)")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="ablations at once, each on cores / jobs threads unless OMP_NUM_THREADS is set (default 1)",
    )
    p.add_argument("--report-only", action="store_true", help="only rewrite the table from finished workspaces")
    p.add_argument("--root", default=".", help="repository root (default: .)")
    p.set_defaults(func=_ablate)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
