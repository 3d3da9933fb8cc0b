"""Merge: N experts (2-slot MoEs branched from one anchor) into one (N+1)-slot MoE.

Slot 0 is the anchor FFN (identical in every expert: it is frozen), slot i is expert i's
domain FFN, router row i is expert i's domain row and row 0 the shared anchor row. Shared
tensors (embeddings, attention, norms, LM head) are combined by a strategy:

- `mean`: the plain average over experts (the published recipe);
- `weighted_mean`: an average with per-expert weights;
- `base_plus_mean_delta`: anchor + scale * mean(expert - anchor). With scale 1 this equals
  `mean` up to rounding; scale > 1 amplifies what the experts learned (task arithmetic).

Tensors stream from the safetensors files one at a time: peak memory is about one tensor
per expert plus the merged output, never N whole experts.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from bar.model.moe import ANCHOR_SLOT, _EXPERT, _ROUTER, expert_name, router_name


class MergeError(ValueError):
    """Experts that cannot be merged; the message names the expert and the tensor."""


def check_compatible(experts: dict[str, Path]) -> dict:
    """The experts' common config; MergeError naming the first expert that differs."""
    configs = {name: json.loads((path / "config.json").read_text()) for name, path in experts.items()}
    first_name, first = next(iter(configs.items()))
    for name, config in configs.items():
        if config.get("kind") != "moe" or config.get("num_experts") != 2:
            raise MergeError(f"{experts[name]}: expert {name!r} is not a 2-slot expert "
                             f"(kind={config.get('kind')}, num_experts={config.get('num_experts')})")
        for key in ("arch", "vocab", "anchor_sha256", "tokenizer_sha256"):
            if config.get(key) != first.get(key):
                raise MergeError(f"expert {name!r} has a different {key} than {first_name!r}: "
                                 f"{config.get(key)} != {first.get(key)}; experts must be branched from "
                                 f"the same anchor with the same tokenizer and architecture")
    return first


def merge(experts: dict[str, Path], strategy: str = "mean", weights: dict[str, float] | None = None,
          delta_scale: float = 1.0, anchor: Path | None = None) -> dict[str, torch.Tensor]:
    """The merged state (Megatron names) of `experts` (name -> output folder), in their order."""
    names = list(experts)
    if strategy == "weighted_mean":
        missing = [n for n in names if n not in (weights or {})]
        if missing:
            raise MergeError(f"weighted_mean needs a weight for every expert; missing: {missing}")
        total = sum(weights[n] for n in names)
        coef = {n: weights[n] / total for n in names}
    else:
        coef = {n: 1 / len(names) for n in names}
    files = {n: safe_open(str(experts[n] / "model.safetensors"), "pt") for n in names}
    anchor_file = safe_open(str(anchor / "model.safetensors"), "pt") if anchor else None
    keys = list(files[names[0]].keys())
    for n in names[1:]:
        if set(files[n].keys()) != set(keys):
            diff = sorted(set(keys) ^ set(files[n].keys()))
            raise MergeError(f"expert {n!r} has different tensors than {names[0]!r}: {diff[:3]}")

    out: dict[str, torch.Tensor] = {}
    for key in keys:
        m, r = _EXPERT.match(key), _ROUTER.match(key)
        if m:
            layer, slot, linear = int(m.group(1)), int(m.group(2)), m.group(3)
            if slot == ANCHOR_SLOT:
                ref = files[names[0]].get_tensor(key)
                for n in names[1:]:
                    if not torch.equal(files[n].get_tensor(key), ref):
                        raise MergeError(f"expert {n!r}: anchor FFN tensor {key} differs from "
                                         f"{names[0]!r}'s: the experts were not branched from the same anchor")
                out[key] = ref
            else:
                for i, n in enumerate(names, start=1):
                    out[expert_name(layer, i, linear)] = files[n].get_tensor(key)
        elif r:
            rows = [files[n].get_tensor(key) for n in names]
            anchor_row = sum(coef[n] * row[ANCHOR_SLOT] for n, row in zip(names, rows))
            out[router_name(int(r.group(1)))] = torch.stack([anchor_row] + [row[1] for row in rows])
        else:
            acc = None
            for n in names:
                t = files[n].get_tensor(key).double()
                acc = coef[n] * t if acc is None else acc + coef[n] * t
            if strategy == "base_plus_mean_delta":
                if anchor_file is None:
                    raise MergeError("base_plus_mean_delta needs the anchor model")
                base = anchor_file.get_tensor(key).double()
                acc = base + delta_scale * (acc - base)
            out[key] = acc.to(torch.float32)
    return out
