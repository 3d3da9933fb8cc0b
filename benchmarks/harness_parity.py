"""lm-eval against bar's own `evaluate` on a finished run: for the anchor and the routed model,
each `bar_<domain>` task's pass rate from lm-evaluation-harness (transformers backend, the
export's chat template, greedy; `bar.harness.run`) beside `evaluate`'s score for that domain, and
every prompt whose outcome differs (its index, both outcomes and lm-eval's reply).

    python benchmarks/harness_parity.py --root DIR [--batch-size 16]

DIR is a repository where `dvc repro` has run (needs the `[eval]` extra). Scores do not depend on
the batch size: exports pad on the left (tests/test_harness.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

EXPORTS = {"anchor": "outputs/train_anchor/hf", "routed": "outputs/fit_router/hf"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="a repository where dvc repro has run")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    root = args.root.resolve()
    with contextlib.chdir(root):
        from bar import harness, tokenizer
        from bar.specs import Specs

        specs = Specs()
        tasks = root / "outputs" / "evaluate" / "harness"
        tok = tokenizer.load(root / "outputs" / "tokenizer")
        domains = sorted(p.stem for p in tasks.glob("*.jsonl"))
        prompts = {d: [json.loads(line)["prompt"] for line in (tasks / f"{d}.jsonl").open()] for d in domains}
        # The context evaluate gives lm-eval: the longest prompt with its reply, at least seq_length.
        longest = max(len(tokenizer.prompt_ids(tok, p)) for ps in prompts.values() for p in ps)
        max_length = max(specs.model.seq_length, longest + specs.eval.max_new_tokens)
        scores = json.loads((root / "metrics" / "evaluate.json").read_text())
        outcomes = json.loads((root / "outputs" / "evaluate" / "outcomes.json").read_text())
        names = [harness.task_name(d) for d in domains]
        print(f"{root}: lm-eval against bar's evaluate, max_length {max_length}, batch size {args.batch_size}")
        print(f"{'model':8s} {'domain':10s} {'prompts':>7s} {'bar':>7s} {'lm-eval':>7s} {'differ':>6s}")
        differing = []
        for model, folder in EXPORTS.items():
            out = harness.run(root / folder, names, [tasks], max_length, log_samples=True, batch_size=args.batch_size)
            for d, task in zip(domains, names):
                ours = [100.0 * o for o in outcomes[model][d]]
                theirs = out["outcomes"][task]
                diff = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
                print(
                    f"{model:8s} {d:10s} {len(theirs):7d} {scores[model][d]:7.2f} "
                    f"{out[f'{task}/pass_rate']:7.2f} {len(diff):6d}"
                )
                differing += [(model, d, i, ours[i], theirs[i], out["samples"][task][i]) for i in diff]
        for model, d, i, a, b, reply in differing:
            print(f"  {model} {d} prompt {i}: bar {a:.0f}, lm-eval {b:.0f}; lm-eval replied {reply!r}")
            print(f"    prompt: {prompts[d][i]!r}")


if __name__ == "__main__":
    main()
