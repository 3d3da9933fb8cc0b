"""The promotion gate: does an upgraded routed model replace the `champion`?

Scores are held-out pass rates (0-100) per domain plus `overall`, as `evaluate` tags them on
each `bar-moe` version (`eval.<domain>`). `decide` judges scores; `gate` judges registered
versions and moves the `champion` aliases (what the upgrade flow runs after the pipeline).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bar import tracking
from bar.specs import PromotionSpec, Specs


@dataclass
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)  # why not, or what was checked
    deltas: dict[str, float] = field(default_factory=dict)  # candidate - champion, per domain

    def summary(self) -> str:
        verdict = "promote" if self.promote else "keep the champion"
        return f"{verdict}: " + "; ".join(self.reasons)


def decide(
    champion: dict[str, float] | None, candidate: dict[str, float], domain: str, spec: PromotionSpec
) -> Decision:
    """Promote only if `domain` (the upgraded expert's) gains more than `spec.min_gain` points and
    no other domain drops by more than `spec.tolerance`. Without a champion, the candidate is
    the first one."""
    if champion is None:
        return Decision(True, ["there is no champion yet: the candidate is the first"])
    missing = sorted(set(champion) - set(candidate))
    if missing or domain not in candidate:
        return Decision(False, [f"the candidate has no scores for {missing or [domain]} (was it evaluated?)"])
    deltas = {d: candidate[d] - champion[d] for d in sorted(champion)}
    reasons = []
    gain = deltas.get(domain, candidate[domain])
    if gain <= spec.min_gain:
        reasons.append(
            f"{domain} did not improve by more than {spec.min_gain:g} points "
            f"({champion.get(domain, 0):.1f} -> {candidate[domain]:.1f})"
        )
    drops = [
        f"{d} dropped {-v:.1f} points ({champion[d]:.1f} -> {candidate[d]:.1f})"
        for d, v in deltas.items()
        if d != domain and -v > spec.tolerance
    ]
    if drops:
        reasons.append(f"beyond the tolerance of {spec.tolerance:g} points: " + ", ".join(drops))
    if reasons:
        return Decision(False, reasons, deltas)
    return Decision(
        True, [f"{domain} gained {gain:.1f} points and no other domain dropped more than {spec.tolerance:g}"], deltas
    )


def gate(root: Path | str, expert: str, candidate, champion) -> Decision:
    """`decide` on `candidate` (a `bar-moe` model version) against `champion` (the version aliased
    `champion` before the pipeline ran, or None) with `expert`'s domain and specs/promotion.yaml;
    if it passes, `champion` points at the candidate and, on `bar-expert-<expert>`, at the
    version the candidate was built from."""
    specs = Specs(root)
    decision = decide(
        None if champion is None else tracking.scores(champion),
        tracking.scores(candidate),
        specs.expert(expert).domain,
        specs.promotion,
    )
    if decision.promote:
        tracking.set_alias("bar-moe", tracking.CHAMPION, candidate.version, root)
        expert_version = candidate.tags.get(f"expert.{expert}.model_version")
        if expert_version and expert_version != "unregistered":
            tracking.set_alias(f"bar-expert-{expert}", tracking.CHAMPION, expert_version, root)
    return decision
