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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bar", description="Branch-Adapt-Route: modular post-training "
                                     "of language models. Run the pipeline with `dvc repro`.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="validate params.yaml and every spec (fast, no training imports)")
    p.add_argument("--root", default=".", help="repository root (default: .)")
    p.set_defaults(func=_validate)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
