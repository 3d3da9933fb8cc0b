"""RLVR rollout generation: our KV-cache path (bar.decode: a plain-PyTorch decoder on the
Megatron-Core model's weights) beside `transformers` `generate` on the same weights exported to
a Llama, and beside Megatron-Core's own static inference context (what bar.decode uses under
tensor parallelism), in one run.

    python benchmarks/rollout.py [--preset default] [--batch 64] [--prompt-length 32] [--new-tokens 48]

One RLVR step's rollouts by default (8 prompts x 8 samples, 48 new tokens). All decode
greedily with no stop token, so all produce exactly batch x new-tokens tokens, and their
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
    from bar.decode import generate
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
        return generate(
            model,
            prompts.tolist(),
            max_new_tokens=args.new_tokens,
            stop_ids=set(),
            vocab_size=arch.vocab_size,
            pad_id=0,
        )

    def megatron():
        real, parallel.tp_size = parallel.tp_size, lambda: 2  # the path bar.decode takes at TP>1
        try:
            return ours()
        finally:
            parallel.tp_size = real

    def theirs():
        with torch.no_grad():
            out = hf.generate(
                prompts,
                attention_mask=torch.ones_like(prompts),
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
                do_sample=False,
                pad_token_id=0,
                eos_token_id=None,
            )
        return out[:, args.prompt_length :].tolist()

    same = ours() == theirs() == megatron()  # also the warm-up
    names = {
        "ours": "bar.decode (TP=1 decoder)",
        "theirs": "transformers generate",
        "megatron": "Megatron-Core inference context",
    }
    times = {
        key: statistics.median(seconds(fn) for _ in range(args.repeats))
        for key, fn in (("ours", ours), ("theirs", theirs), ("megatron", megatron))
    }
    parallel.shutdown()
    tokens = args.batch * args.new_tokens
    print(
        f"preset {args.preset}: {args.batch} rollouts x {args.new_tokens} new tokens after "
        f"{args.prompt_length} prompt tokens; median of {args.repeats}; identical greedy outputs: {same}"
    )
    for key, t in times.items():
        print(f"  {names[key]:35s} {t:6.2f} s  {tokens / t:8.0f} tok/s")
    print(
        f"  ours vs transformers: {times['theirs'] / times['ours']:.2f}x the speed; "
        f"vs Megatron-Core inference: {times['megatron'] / times['ours']:.2f}x"
    )


if __name__ == "__main__":
    main()
