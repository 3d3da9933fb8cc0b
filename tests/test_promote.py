"""The promotion gate on scores (on a real registry: tests/test_upgrade_gate.py; the flow that applies
it runs in tests/stages/test_pipeline.py)."""

from bar.promote import decide
from bar.specs import PromotionSpec

CHAMPION = {"code": 40.0, "math": 60.0, "general": 50.0, "overall": 50.0}
GATE = PromotionSpec(min_gain=0.0, tolerance=2.0)


def test_promotes_when_the_domain_improves_and_nothing_else_drops_beyond_tolerance():
    d = decide(CHAMPION, {"code": 45.0, "math": 58.5, "general": 50.0, "overall": 51.0}, "code", GATE)
    assert d.promote and d.deltas["code"] == 5.0 and d.deltas["math"] == -1.5


def test_refuses_when_another_domain_drops_too_much():
    d = decide(CHAMPION, {"code": 55.0, "math": 57.0, "general": 50.0, "overall": 53.0}, "code", GATE)
    assert not d.promote
    assert d.reasons == ["beyond the tolerance of 2 points: math dropped 3.0 points (60.0 -> 57.0)"]


def test_refuses_when_the_upgraded_domain_does_not_improve():
    same = dict(CHAMPION)
    d = decide(CHAMPION, same, "code", GATE)
    assert not d.promote and "code did not improve" in d.summary()
    assert not decide(CHAMPION, {**CHAMPION, "code": 41.0}, "code", PromotionSpec(min_gain=1.0)).promote


def test_first_candidate_becomes_champion_and_unscored_candidates_do_not():
    assert decide(None, {"code": 0.0}, "code", GATE).promote
    assert not decide(CHAMPION, {"code": 90.0}, "code", GATE).promote  # math, general never scored
