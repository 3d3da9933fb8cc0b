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


def _compare(args) -> int:
    """An expert's versions side by side: what changed in its spec, its scores, the routed
    models built from it, and its cost."""
    from bar import tracking

    history = tracking.expert_history(args.expert, args.root)
    if not history:
        print(f"error: no finished runs of expert {args.expert!r} in {tracking.tracking_uri(args.root)}; "
              "run `dvc repro` first", file=sys.stderr)
        return 2
    heads = [f"v{h['version']} {h['run_id'][:8]}" for h in history]
    keys = sorted({k for h in history for k in h["params"]})
    changed = [k for k in keys if len({h["params"].get(k) for h in history}) > 1]
    domains = sorted({k.removeprefix("eval/") for h in history for k in h["metrics"] if k.startswith("eval/")})
    rows = [(f"spec {k.removeprefix('expert.')}", [h["params"].get(k, "-") for h in history]) for k in changed]
    rows += [(f"expert {d}", [_num(h["metrics"].get(f"eval/{d}")) for h in history]) for d in domains]
    rows += [(f"routed {d}", [_num(h["routed"].get(d)) for h in history]) for d in [*domains, "overall"]]
    rows += [("bar-moe versions", [",".join(map(str, h["moe_versions"])) or "-" for h in history]),
             ("cost tokens", [_num(h["metrics"].get("cost/tokens"), "{:.0f}") for h in history]),
             ("cost FLOPs", [_num(h["metrics"].get("cost/flops"), "{:.3g}") for h in history]),
             ("cost wall s", [_num(h["metrics"].get("cost/wall_seconds"), "{:.0f}") for h in history])]
    width = max(len(r[0]) for r in rows)
    cols = [max(len(heads[i]), *(len(str(r[1][i])) for r in rows)) for i in range(len(history))]
    print(f"expert {args.expert}: {len(history)} runs ({tracking.tracking_uri(args.root)})")
    print(" " * width + "  " + "  ".join(h.rjust(c) for h, c in zip(heads, cols)))
    for label, values in rows:
        print(label.ljust(width) + "  " + "  ".join(str(v).rjust(c) for v, c in zip(values, cols)))
    return 0


def _num(value, fmt: str = "{:.1f}") -> str:
    return "-" if value is None or value != value else fmt.format(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bar", description="Branch-Adapt-Route: modular post-training "
                                     "of language models. Run the pipeline with `dvc repro`.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="validate params.yaml and every spec (fast, no training imports)")
    p.add_argument("--root", default=".", help="repository root (default: .)")
    p.set_defaults(func=_validate)
    p = sub.add_parser("compare", help="an expert's versions side by side (spec diff, scores, cost) from MLflow")
    p.add_argument("expert", help="expert name, as in specs/experts/<expert>.yaml")
    p.add_argument("--root", default=".", help="repository root (default: .)")
    p.set_defaults(func=_compare)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
