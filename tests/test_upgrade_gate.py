"""The upgrade flow's gate (`bar.promote.gate`) on a real SQLite MLflow registry, filled by the
stages' own `register` functions: which versions the `champion` aliases point at after it.

Real training scores too noisily on tiny models to steer the gate; here the scores are set."""

import json
import shutil

import pytest

from bar import tracking
from bar.promote import gate
from bar.specs import Specs
from bar.stages import fit_router, train_expert
from conftest import ROOT
from flows.upgrade import report

CHAMPION = {"math": 60.0, "code": 40.0, "tool_use": 70.0, "safety": 80.0, "general": 50.0, "overall": 60.0}


def build(root, stage: str, files: dict[str, str]):
    """A stand-in for a stage's output folder: the registry keeps its files and their hash."""
    out = root / "outputs" / stage
    for name, text in files.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_text(text)
    return out


def expert(root, name: str, version: int, weights: str) -> str:
    """Register a `bar-expert-<name>` version as train_expert does; its model's sha256."""
    from bar.train.checkpoint import sha256

    out = build(root, f"train_expert/{name}/{weights}", {"model.safetensors": weights, "hf/config.json": "{}"})
    with tracking.stage_run(
        f"train_expert@{name}", spec={}, tags={"expert": name, "expert_version": str(version)}, cwd=root
    ) as run:
        train_expert.register(run, out, name, version, "spec")
    return sha256(out / "model.safetensors")


def routed(root, components: dict[str, tuple[int, str]], scores: dict[str, float], weights: str):
    """Register a `bar-moe` version as fit_router does and tag its scores as evaluate does; the
    version as the flow finds it (by its model's sha256)."""
    from bar.train.checkpoint import sha256

    config = {"components": [{"name": n, "version": v, "sha256": h} for n, (v, h) in components.items()]}
    out = build(
        root,
        f"fit_router/{weights}",
        {"config.json": json.dumps(config), "model.safetensors": weights, "hf/config.json": "{}"},
    )
    with tracking.stage_run("fit_router", spec={}, tags={}, cwd=root) as run:
        fit_router.register(run, out)
    digest = sha256(out / "model.safetensors")
    version = tracking.model_version_with("bar-moe", "sha256", digest, root).version
    tracking.tag_model_version("bar-moe", version, {f"eval.{d}": v for d, v in scores.items()}, root)
    return tracking.model_version_with("bar-moe", "sha256", digest, root)


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A project whose champion is bar-moe v2 (the router refitted on code v1: bar-expert-code v1)
    and where code v2 is registered as bar-expert-code v2, not yet assembled."""
    root = tmp_path / "project"
    shutil.copytree(ROOT / "specs", root / "specs")
    shutil.copy(ROOT / "params.yaml", root / "params.yaml")
    monkeypatch.chdir(root)  # where DVC runs the stages
    math, code = expert(root, "math", 1, "math v1"), expert(root, "code", 1, "code v1")
    routed(root, {"math": (1, math), "code": (1, code)}, CHAMPION, "router 1")
    champion = routed(root, {"math": (1, math), "code": (1, code)}, CHAMPION, "router 2")
    tracking.set_alias("bar-moe", tracking.CHAMPION, champion.version, root)
    tracking.set_alias("bar-expert-code", tracking.CHAMPION, "1", root)
    return root, {"math": (1, math), "code": (2, expert(root, "code", 2, "code v2"))}


def champions(root) -> tuple[int, int]:
    """The versions `champion` points at on bar-moe and on bar-expert-code."""
    return tuple(
        int(tracking.model_version_by_alias(name, tracking.CHAMPION, root).version)
        for name in ("bar-moe", "bar-expert-code")
    )


def test_an_upgrade_that_improves_its_domain_replaces_both_champions(registry):
    root, components = registry
    spec = Specs(root).promotion
    scores = {**CHAMPION, "code": CHAMPION["code"] + spec.min_gain + 5, "math": CHAMPION["math"] - spec.tolerance / 2}
    candidate = routed(root, components, scores, "router 3")
    champion = tracking.model_version_by_alias("bar-moe", tracking.CHAMPION, root)
    assert champions(root) == (2, 1)

    decision = gate(root, "code", candidate, champion)
    assert decision.promote, decision.reasons
    assert champions(root) == (3, 2)  # the candidate and the code expert it was built from
    assert tracking.model_version_by_alias("bar-expert-math", tracking.CHAMPION, root) is None
    text = report("code", 2, champion, candidate, decision)
    assert text.startswith("# Upgrade code to v2: promoted\n")
    assert "| domain | champion (v2) | candidate (v3) | change |" in text
    assert f"| code | 40.0 | {scores['code']:.1f} | {spec.min_gain + 5:+.1f} |" in text


def test_an_upgrade_that_costs_another_domain_past_the_tolerance_leaves_both_champions(registry):
    root, components = registry
    spec = Specs(root).promotion
    scores = {**CHAMPION, "code": CHAMPION["code"] + spec.min_gain + 5, "math": CHAMPION["math"] - spec.tolerance - 1}
    candidate = routed(root, components, scores, "router 3")
    champion = tracking.model_version_by_alias("bar-moe", tracking.CHAMPION, root)

    decision = gate(root, "code", candidate, champion)
    assert not decision.promote
    assert len(decision.reasons) == 1 and "math dropped" in decision.reasons[0], decision.reasons
    assert champions(root) == (2, 1)
    assert int(tracking.model_version_by_alias("bar-moe", tracking.CANDIDATE, root).version) == 3
    text = report("code", 2, champion, candidate, decision)
    assert text.startswith("# Upgrade code to v2: not promoted\n")
    assert f"| math | 60.0 | {scores['math']:.1f} | {-spec.tolerance - 1:+.1f} |" in text
