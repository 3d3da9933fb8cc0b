"""What the baselines train through: the monolithic one replays the experts' data."""

from bar.specs import Specs
from bar.train import baselines
from bar.train.phases import phase_seed


def test_monolithic_replays_each_experts_phase_with_its_seed(tmp_path):
    import shutil

    from conftest import ROOT, set_params

    shutil.copytree(ROOT / "specs", tmp_path / "specs")  # the repository's specs, default preset
    shutil.copy(ROOT / "params.yaml", tmp_path)
    set_params(tmp_path, preset="default", baselines=["monolithic"])
    specs = Specs(tmp_path)
    phases = {p.label: p for p in baselines.phases(specs, "monolithic")}
    for label, p in phases.items():
        have = [e for e in specs.params.experts if getattr(specs.expert(e).phases, label)]
        assert [seed for _, seed in p.replay] == [
            phase_seed(specs, specs.expert(e).phases.enabled().index(label)) for e in have
        ]
        experts = [getattr(specs.expert(e).phases, label) for e in have]
        # The experts' phase specs, but a dense model has no router: its lr_scale is dropped.
        assert [r.model_dump(exclude={"lr_scale"}) for r, _ in p.replay] == [
            x.model_dump(exclude={"lr_scale"}) for x in experts
        ]
        assert [r.lr_scale for r, _ in p.replay] == [
            {g: v for g, v in x.lr_scale.items() if g != "router"} for x in experts
        ]
        assert "router" not in p.spec.lr_scale
    assert any("router" in specs.expert(e).phases.sft.lr_scale for e in specs.params.experts)
    # The default experts: RLVR is math's 80 x 16 prompts and code's 80 x 8, 16 a step.
    assert phases["rlvr"].spec.steps == (80 * 16 + 80 * 8) // 16 == 120
    assert phases["sft"].spec.steps == sum(specs.expert(e).phases.sft.steps for e in specs.params.experts)
