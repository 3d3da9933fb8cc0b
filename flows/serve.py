"""Scheduled deployments of the bar flows, served by this process.

    prefect server start --host 127.0.0.1            # terminal 1: the UI at http://127.0.0.1:4200
    PREFECT_API_URL=http://127.0.0.1:4200/api python -m flows.serve [--root DIR] [--cron "0 2 * * *"]

`bar-pipeline/nightly` runs the whole pipeline on the cron schedule (DVC skips what is up to
date); `upgrade-expert/upgrade` has no schedule and is started from the UI or with
`prefect deployment run upgrade-expert/upgrade -p expert=code -p version=2`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from flows.pipeline import bar_pipeline
from flows.upgrade import upgrade_expert

NIGHTLY = "0 2 * * *"


def deployments(root: str | Path, cron: str = NIGHTLY) -> list:
    root = str(Path(root).resolve())
    return [
        bar_pipeline.to_deployment(
            name="nightly",
            cron=cron,
            parameters={"root": root},
            description="the whole BAR pipeline, nightly; DVC skips what is up to date",
            tags=["bar"],
        ),
        upgrade_expert.to_deployment(
            name="upgrade",
            parameters={"root": root},
            description="apply specs/upgrades/<expert>.v<version>.yaml, run, gate",
            tags=["bar"],
        ),
    ]


def main() -> None:
    from prefect import serve

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="the bar repository (default: .)")
    parser.add_argument("--cron", default=NIGHTLY, help=f"schedule of bar-pipeline/nightly (default: {NIGHTLY!r})")
    args = parser.parse_args()
    serve(*deployments(args.root, args.cron))


if __name__ == "__main__":
    main()
