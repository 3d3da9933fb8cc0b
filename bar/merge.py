"""Merge: N experts (2-slot MoEs branched from one anchor) into one (N+1)-slot MoE.

Slot 0 is the anchor FFN (identical in every expert: it is frozen), slot i is expert i's
domain FFN, router row i is expert i's domain row and row 0 the shared anchor row. Shared
tensors (embeddings, attention, norms, LM head) are combined by a strategy (and so is slot 0
when an expert trained it: the ablation `anchor_ffn` in its phases):

- `mean`: the plain average over experts (the published recipe);
- `weighted_mean`: an average with per-expert weights;
- `base_plus_mean_delta`: anchor + scale * mean(expert - anchor). With scale 1 this equals
  `mean` up to rounding; scale > 1 amplifies what the experts learned (task arithmetic);
- `disjoint_mean`: anchor + the mean of the experts' changes over the experts that changed each
  element (the disjoint merge of TIES-merging, without its trimming and sign election). An
  element one expert trained keeps that expert's change instead of 1/N of it (an embedding row
  of a token only tool use writes); one every expert changed is their mean, as in `mean`.
- `ties`: TIES-merging (Yadav et al., 2023). Each expert's change of a tensor is trimmed to its
  largest `density` share by magnitude, each element takes the sign with the larger total
  trimmed change, and the anchor gets the mean of the trimmed changes of that sign.

`by_group` gives a group of shared tensors (embeddings, attention, norms, lm_head, anchor_ffn)
a strategy of its own, and `strategy` the rest. What each costs the default experts, group by
group: docs/findings.md, "where the merge's cost lives".

Experts stream from their safetensors files one at a time: peak memory is about one expert
plus the merged output (and float64 running sums of the shared tensors; for `disjoint_mean`
an int16 count per element, for `ties` a sum and a count per sign), never N experts.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from bar.model.moe import _EXPERT, _ROUTER, ANCHOR_SLOT, expert_name, group_of, router_name
from bar.specs import InputError, MergeSpec, ModelSpec


def is_shared(key: str) -> bool:
    """A tensor the merge combines across experts (embeddings, attention, norms, LM head):
    neither an FFN slot nor a router."""
    return not (_EXPERT.match(key) or _ROUTER.match(key))


def is_anchor_ffn(key: str) -> bool:
    """A tensor of slot 0, the anchor's FFN (the same key in a 2-slot expert and a merged MoE)."""
    m = _EXPERT.match(key)
    return bool(m) and int(m.group(2)) == ANCHOR_SLOT


def with_merged_shared(expert: dict[str, torch.Tensor], merged: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An expert's 2-slot state with its shared tensors and anchor FFN replaced by the merged
    model's (slot 0 is the anchor's unless an expert trained it): the expert as the merge leaves
    it, before any routing (what the merge alone costs it)."""
    return {k: merged[k] if is_shared(k) or is_anchor_ffn(k) else t for k, t in expert.items()}


def with_only(moe: dict[str, torch.Tensor], slot: int) -> dict[str, torch.Tensor]:
    """A merged or routed (N+1)-slot state reduced to a 2-slot one: the anchor (slot 0) and
    expert `slot` (as slot 1), with their two router rows. A softmax over two logits is the full
    one renormalised over them: the model with every other expert masked out (what the other
    experts' share of the router costs an expert's domain)."""
    out = {}
    for key, t in moe.items():
        m = _EXPERT.match(key)
        if m and int(m.group(2)) in (ANCHOR_SLOT, slot):
            out[expert_name(int(m.group(1)), 1 if int(m.group(2)) == slot else ANCHOR_SLOT, m.group(3))] = t
        elif _ROUTER.match(key):
            out[key] = t[[ANCHOR_SLOT, slot]]
        elif not m:
            out[key] = t
    return out


class MergeError(InputError):
    """Experts that cannot be merged; the message names the expert and the tensor."""


def _value(config: dict, key: str):
    # The architecture as a ModelSpec: an expert trained before a key was added (with its default) matches.
    return ModelSpec(**config["arch"]) if key == "arch" and "arch" in config else config.get(key)


def check_compatible(experts: dict[str, Path]) -> dict:
    """The experts' common config; MergeError naming the first expert that differs."""
    configs = {name: json.loads((path / "config.json").read_text()) for name, path in experts.items()}
    first_name, first = next(iter(configs.items()))
    for name, config in configs.items():
        if config.get("kind") != "moe" or config.get("num_experts") != 2:
            raise MergeError(
                f"{experts[name]}: expert {name!r} is not a 2-slot expert "
                f"(kind={config.get('kind')}, num_experts={config.get('num_experts')})"
            )
        for key in ("arch", "vocab", "anchor_sha256", "tokenizer_sha256"):
            if _value(config, key) != _value(first, key):
                raise MergeError(
                    f"{experts[name] / 'config.json'}: expert {name!r} has a different {key} "
                    f"than {first_name!r}: "
                    f"{config.get(key)} != {first.get(key)}; experts must be branched from "
                    f"the same anchor with the same tokenizer and architecture"
                )
    return first


def _in_anchor(key: str) -> str:
    """The anchor model's name of a tensor: its dense FFN for slot 0, else the same name."""
    m = _EXPERT.match(key)
    return f"decoder.layers.{m.group(1)}.mlp.{m.group(3)}" if m and int(m.group(2)) == ANCHOR_SLOT else key


def trimmed(delta: torch.Tensor, density: float) -> torch.Tensor:
    """`delta` with all but its largest `density` share of elements (by magnitude) set to 0."""
    keep = max(1, round(density * delta.numel()))
    if keep >= delta.numel():
        return delta
    magnitude = delta.abs()
    threshold = magnitude.flatten().kthvalue(delta.numel() - keep + 1).values  # the keep-th largest
    return torch.where(magnitude >= threshold, delta, torch.zeros_like(delta))


def _add_change(sums: dict, counts: dict, key: str, delta: torch.Tensor) -> None:
    """Add an expert's change of `key` into its running sum and count how many experts changed each element."""
    if key in sums:
        sums[key].add_(delta), counts[key].add_(delta != 0)
    else:
        sums[key], counts[key] = delta, (delta != 0).short()


def merge(experts: dict[str, Path], spec: MergeSpec, anchor: Path | None = None) -> dict[str, torch.Tensor]:
    """The merged state (Megatron names) of `experts` (name -> output folder), in their order,
    combined as `spec` says (`anchor`: the anchor's output folder, for the strategies that need it).

    One expert file is open at a time: what the output keeps is copied out of it, shared
    tensors are added into float64 running sums, and its memory map is released before the
    next one is opened. Peak memory: the output, the running sums of the shared tensors and
    one expert."""
    names, weights = list(experts), spec.weights

    def strategy_of(key: str) -> str:
        return spec.by_group.get(group_of(key), spec.strategy)

    strategies, weighted = {spec.strategy, *spec.by_group.values()}, {}
    if "weighted_mean" in strategies:
        missing = [n for n in names if n not in weights]
        if missing:
            raise MergeError(f"weighted_mean needs a weight for every expert; missing: {missing}")
        weighted = {n: weights[n] / sum(weights[m] for m in names) for n in names}
    plain = {n: 1 / len(names) for n in names}
    coef = weighted if spec.strategy == "weighted_mean" else plain  # the router's anchor rows
    # Slot 0 is combined as the shared tensors are when an expert trained it, else copied (and checked).
    trained = [n for n in names if json.loads((experts[n] / "config.json").read_text()).get("anchor_ffn_trained")]
    base = None  # the anchor, for the strategies that combine the experts' changes from it
    needs_anchor = sorted(strategies & {"base_plus_mean_delta", "disjoint_mean", "ties"})
    if needs_anchor:
        if anchor is None:
            raise MergeError(f"{needs_anchor[0]} needs the anchor model")
        base = safe_open(str(anchor / "model.safetensors"), "pt")

    out: dict[str, torch.Tensor] = {}
    sums: dict[str, torch.Tensor] = {}  # shared tensors: sum of coef * tensor, float64 (disjoint_mean: of changes)
    changed: dict[str, torch.Tensor] = {}  # disjoint_mean: how many experts changed each element (ties: upward)
    down_sums: dict[str, torch.Tensor] = {}  # ties: sum and count of the downward changes
    down_changed: dict[str, torch.Tensor] = {}
    anchor_rows: dict[str, torch.Tensor] = {}  # router rows of the anchor slot: weighted sum
    keys: list[str] = []
    dtypes: dict[str, torch.dtype] = {}  # the experts' (their precision): the merged model keeps it
    for i, n in enumerate(names, start=1):
        with safe_open(str(experts[n] / "model.safetensors"), "pt") as f:
            if i == 1:
                keys = list(f.keys())
            elif set(f.keys()) != set(keys):
                diff = sorted(set(keys) ^ set(f.keys()))
                raise MergeError(f"expert {n!r} has different tensors than {names[0]!r}: {diff[:3]}")
            for key in keys:
                t = f.get_tensor(key)
                m, r = _EXPERT.match(key), _ROUTER.match(key)
                if trained and is_anchor_ffn(key):
                    m = None  # combined below, as a shared tensor
                if m:
                    layer, slot, linear = int(m.group(1)), int(m.group(2)), m.group(3)
                    if slot != ANCHOR_SLOT:
                        out[expert_name(layer, i, linear)] = t.clone()
                    elif i == 1:
                        out[key] = t.clone()
                    elif not torch.equal(t, out[key]):
                        raise MergeError(
                            f"expert {n!r}: anchor FFN tensor {key} differs from "
                            f"{names[0]!r}'s: the experts were not branched from the same anchor"
                        )
                elif r:
                    name = router_name(int(r.group(1)))
                    if i == 1:
                        out[name] = torch.empty((len(names) + 1, *t.shape[1:]), dtype=t.dtype)
                        anchor_rows[name] = coef[n] * t[ANCHOR_SLOT].double()
                    else:
                        anchor_rows[name] = anchor_rows[name] + coef[n] * t[ANCHOR_SLOT].double()
                    out[name][i] = t[1]
                else:  # shared (is_shared)
                    how = strategy_of(key)
                    if how in ("disjoint_mean", "ties"):  # its change from the anchor
                        delta = t.double() - base.get_tensor(_in_anchor(key)).double()
                        if how == "disjoint_mean":
                            _add_change(sums, changed, key, delta)
                        else:  # trimmed, its positive and negative parts apart
                            delta = trimmed(delta, spec.density)
                            _add_change(sums, changed, key, delta.clamp(min=0))
                            _add_change(down_sums, down_changed, key, delta.clamp(max=0))
                    else:
                        term = (weighted if how == "weighted_mean" else plain)[n] * t.double()
                        sums[key] = term if i == 1 else sums[key].add_(term)
                if key in sums:
                    dtypes[key] = t.dtype
                del t  # nothing from this file outlives the loop: its memory map is released
    for name, row in anchor_rows.items():
        out[name][ANCHOR_SLOT] = row
    for key in list(sums):
        acc, strategy = sums.pop(key), strategy_of(key)
        if strategy == "disjoint_mean":
            acc = base.get_tensor(_in_anchor(key)).double() + acc / changed.pop(key).clamp(min=1)
        elif strategy == "ties":  # the elected sign's mean change
            down = down_sums.pop(key)
            up, down_mean = acc / changed.pop(key).clamp(min=1), down / down_changed.pop(key).clamp(min=1)
            acc = base.get_tensor(_in_anchor(key)).double() + torch.where(acc + down >= 0, up, down_mean)
        elif strategy == "base_plus_mean_delta":
            b = base.get_tensor(_in_anchor(key)).double()
            acc = b + spec.delta_scale * (acc - b)
        out[key] = acc.to(dtypes[key])
    return out
