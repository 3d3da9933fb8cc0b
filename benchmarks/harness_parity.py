"""lm-eval against bar's own `evaluate` on a finished run: for the anchor and the routed model,
each `bar_<domain>` task's pass rate from lm-evaluation-harness (transformers backend, the
export's chat template, greedy; `bar.harness.run`) beside `evaluate`'s score for that domain, and
every prompt whose outcome differs (its index, both outcomes and lm-eval's reply).

    python benchmarks/harness_parity.py --root DIR [--batch-size 16]

DIR is a repository where `dvc repro` has run (needs the `[eval]` extra). Exports pad on the
left, so in fp32 scores do not depend on the batch size (tests/test_harness.py); in bf16 a
near-tie can round either way with the batch's shape.

With `--explain`, each differing prompt is run again alone through both implementations, bar's
(`bar.decode` on the Megatron-Core model) and the export's (`transformers` `generate`), in the
run's precision and in fp32: the experts the routed model serves it with (their mean router
share over the prompt, and the runner-up's) and each reply. Where both agree in fp32, the two
compute the same function and the difference is rounding.
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
    parser.add_argument("--explain", action="store_true", help="run each differing prompt again, in fp32 too")
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
        if args.explain and differing:
            explain(specs, tok, [(model, d, i) for model, d, i, *_ in differing])


def explain(specs, tok, cases: list[tuple[str, str, int]]) -> None:
    """Each case (model, domain, prompt index) alone through bar's decoding and the export's
    `generate`, in the spec's precision and in fp32: the experts served and the reply."""
    import torch
    from transformers import AutoModelForCausalLM

    from bar import parallel, tokenizer
    from bar.decode import expert_shares, generate
    from bar.evaluation import load_moe
    from bar.files import output
    from bar.model import build
    from bar.scoring import eval_examples
    from bar.train.checkpoint import load_state

    parallel.init(1, specs.params.seed)
    slots = ["anchor", *specs.params.experts]
    k = json.loads(output("fit_router", "config.json").read_text()).get("sequence_topk")
    stops, n = sorted(tokenizer.stop_ids(tok)), specs.eval.max_new_tokens

    def ours(name: str, precision: str):
        arch = specs.model.model_copy(update={"precision": precision})
        if name == "routed":
            model = load_moe(arch, output("fit_router"))[0]
        else:
            from safetensors.torch import load_file

            model = build(arch, 1)
            load_state(model, load_file(output("train_anchor", "model.safetensors")))
        model.eval()

        def run(ids: list[int]):
            shares = expert_shares(model, [ids], pad_id=tok.pad_token_id)[0] if name == "routed" else None
            new = generate(
                model,
                [ids],
                max_new_tokens=n,
                stop_ids=stops,
                vocab_size=len(tok),
                pad_id=tok.pad_token_id,
                sequence_topk=k if name == "routed" else None,
            )[0]
            return shares, tokenizer.decode_response(tok, new)

        return run

    def theirs(name: str, precision: str):
        dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[precision]
        hf = AutoModelForCausalLM.from_pretrained(EXPORTS[name], trust_remote_code=True, dtype=dtype).eval()

        def run(ids: list[int]):
            x = torch.tensor([ids])
            shares = hf.shares(x)[0] if name == "routed" else None  # what `SequenceRouting.choose` ranks by
            out = hf.generate(x, max_new_tokens=n, do_sample=False, eos_token_id=stops, pad_token_id=tok.pad_token_id)
            reply = tokenizer.decode_response(tok, out[0, len(ids) :].tolist())
            return shares, reply

        return run

    print("\neach differing prompt alone: bar's decoding and the export's generate, in the run's precision and fp32")
    precisions = dict.fromkeys([specs.model.precision, "fp32"])
    for name in dict.fromkeys(m for m, _, _ in cases):
        sides = {f"{who} {p}": make(name, p) for p in precisions for who, make in (("bar", ours), ("lm-eval", theirs))}
        for model, d, i in cases:
            if model != name:
                continue
            e = eval_examples(d, specs.eval)[i]
            ids = tokenizer.prompt_ids(tok, e.asked, e.tools)
            print(f"  {model} {d} prompt {i}:")
            for side, run in sides.items():
                shares, reply = run(ids)
                served = ""
                if shares is not None:
                    ranked = [
                        slot for slot in shares.float().argsort(descending=True).tolist() if slot != 0
                    ]  # the anchor serves all
                    a, b = ranked[0], ranked[1]
                    served = f"serves {slots[a]} ({shares[a]:.4f}; next {slots[b]} {shares[b]:.4f}) "
                print(f"    {side:13s} {served}{reply!r}")


if __name__ == "__main__":
    main()
