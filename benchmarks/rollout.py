"""RLVR rollout generation: our KV-cache path (bar.generate on the Megatron-Core model) beside
`transformers` `generate` on the same weights exported to a Llama, in one run.

    python benchmarks/rollout.py [--preset default] [--batch 64] [--prompt-length 32] [--new-tokens 48]

One RLVR step's rollouts by default (8 prompts x 8 samples, 48 new tokens). Both decode
greedily with no stop token, so both produce exactly batch x new-tokens tokens, and their
outputs are checked equal. Median of `--repeats` timed runs after one warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import llama, model_spec, seconds  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--prompt-length", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from bar import parallel
    from bar.generate import generate
    from bar.model import build
    from bar.model.hf import to_hf
    from bar.train.checkpoint import full_state

    arch = model_spec(args.preset)
    parallel.init(1, 0)
    model = build(arch, 1).eval()
    hf = llama(arch).eval()
    hf.load_state_dict(to_hf(full_state(model), arch, arch.vocab_size))
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(1, arch.vocab_size, (args.batch, args.prompt_length), generator=g)

    def ours():
        return generate(model, prompts.tolist(), max_new_tokens=args.new_tokens, stop_ids=set(),
                        vocab_size=arch.vocab_size, pad_id=0)

    def theirs():
        with torch.no_grad():
            out = hf.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=args.new_tokens,
                              min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0, eos_token_id=None)
        return out[:, args.prompt_length:].tolist()

    same = ours() == theirs()  # also the warm-up
    times = {name: statistics.median(seconds(fn) for _ in range(args.repeats))
             for name, fn in (("bar.generate (Megatron-Core, KV cache)", ours),
                              ("transformers generate", theirs))}
    parallel.shutdown()
    tokens = args.batch * args.new_tokens
    print(f"preset {args.preset}: {args.batch} rollouts x {args.new_tokens} new tokens after "
          f"{args.prompt_length} prompt tokens; median of {args.repeats}; identical greedy outputs: {same}")
    for name, t in times.items():
        print(f"  {name:40s} {t:6.2f} s  {tokens / t:8.0f} tok/s")
    ratio = times["transformers generate"] / times["bar.generate (Megatron-Core, KV cache)"]
    print(f"  ours vs transformers: {ratio:.2f}x the speed")


if __name__ == "__main__":
    main()
