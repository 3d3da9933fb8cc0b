"""The `upgrade-expert` flow: put a prepared expert spec version in place, run the pipeline
(DVC re-runs only that expert and the assembly), and promote the new routed model to
`champion` only if the gate in `specs/promotion.yaml` passes against the current champion.

    python -m flows.upgrade code 2 [--root DIR]     # applies specs/upgrades/code.v2.yaml
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from flows.pipeline import bar_pipeline


def report(expert: str, version: int, champion, candidate, decision) -> str:
    from bar.tracking import scores

    old, new = ({} if champion is None else scores(champion)), scores(candidate)
    lines = [
        f"# Upgrade {expert} to v{version}: {'promoted' if decision.promote else 'not promoted'}",
        "",
        decision.summary(),
        "",
        f"| domain | champion{'' if champion is None else f' (v{champion.version})'} | "
        f"candidate (v{candidate.version}) | change |",
        "|---|---|---|---|",
    ]
    for d in sorted(new):
        change = f"{new[d] - old[d]:+.1f}" if d in old else "-"
        lines.append(f"| {d} | {old.get(d, float('nan')):.1f} | {new[d]:.1f} | {change} |")
    return "\n".join(lines) + "\n"


@flow(name="upgrade-expert", log_prints=True)
def upgrade_expert(expert: str, version: int, root: str = ".") -> dict:
    from bar import tracking
    from bar.promote import gate
    from bar.specs import Specs
    from bar.train.checkpoint import sha256

    root = Path(root).resolve()
    logger = get_run_logger()
    specs = Specs(root)
    if expert not in specs.params.experts:
        raise ValueError(
            f"{root / 'params.yaml'}: experts = {specs.params.experts} has no {expert!r}; add it there to upgrade it"
        )
    source = specs.upgrade(expert, version)  # validated before anything runs
    target = specs.path(f"experts/{expert}")
    if target.read_bytes() != source.read_bytes():
        shutil.copy(source, target)
        logger.info("%s <- %s", target.relative_to(root), source.relative_to(root))

    champion = tracking.model_version_by_alias("bar-moe", tracking.CHAMPION, root)
    result = bar_pipeline(root=str(root))
    routed = root / "outputs" / "fit_router" / "model.safetensors"
    candidate = tracking.model_version_with("bar-moe", "sha256", sha256(routed), root)
    if candidate is None:
        raise RuntimeError(
            f"the routed model {routed} is not a registered bar-moe version: was it fitted by "
            f"this repository's pipeline?"
        )
    decision = gate(root, expert, candidate, champion)
    text = report(expert, version, champion, candidate, decision)
    create_markdown_artifact(text, key=f"upgrade-{expert.replace('_', '-')}", description=decision.summary())
    logger.info("%s", decision.summary())
    now = candidate if decision.promote else champion
    return {
        "promoted": decision.promote,
        "reasons": decision.reasons,
        "deltas": decision.deltas,
        "candidate": candidate.version,
        "champion": now.version if now else None,
        "stages": result["stages"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("expert", help="expert name (specs/experts/<expert>.yaml)")
    parser.add_argument("version", type=int, help="the prepared version: specs/upgrades/<expert>.v<version>.yaml")
    parser.add_argument("--root", default=".", help="the bar repository (default: .)")
    args = parser.parse_args()
    result = upgrade_expert(args.expert, args.version, args.root)
    print(json.dumps({k: v for k, v in result.items() if k != "stages"}, indent=1))


if __name__ == "__main__":
    main()
