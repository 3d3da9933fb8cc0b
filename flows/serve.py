"""Scheduled deployments of the bar flows, served by this process or run by a work pool's workers.

    prefect server start --host 127.0.0.1            # terminal 1: the UI at http://127.0.0.1:4200
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python -m flows.serve [--root DIR] [--cron "0 2 * * *"]     # terminal 2: this process runs them

or, on the machines that train (each flow run a subprocess of a worker):

    python -m flows.serve --root DIR --pool bar       # registers them with the process work pool `bar`
    prefect worker start --pool bar                   # on each machine, in the repository's environment

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


def deployments(root: str | Path, cron: str = NIGHTLY, **kw) -> list:
    """The two deployments for the repository at `root`; `kw` goes to `to_deployment`."""
    root = str(Path(root).resolve())
    return [
        bar_pipeline.to_deployment(
            name="nightly",
            cron=cron,
            parameters={"root": root},
            description="the whole BAR pipeline, nightly; DVC skips what is up to date",
            tags=["bar"],
            **kw,
        ),
        upgrade_expert.to_deployment(
            name="upgrade",
            parameters={"root": root},
            description="apply specs/upgrades/<expert>.v<version>.yaml, run, gate",
            tags=["bar"],
            **kw,
        ),
    ]


def to_pool(root: str | Path, pool: str, cron: str = NIGHTLY) -> None:
    """Register the deployments with the process work pool `pool` (created if missing). A worker
    imports the flows by module (`flows.pipeline`), so any machine with bar installed can run them."""
    from prefect import deploy, get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.deployments.runner import EntrypointType
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
    deploy(
        *deployments(root, cron, entrypoint_type=EntrypointType.MODULE_PATH),
        work_pool_name=pool,
        build=False,
        push=False,
        print_next_steps_message=False,
        ignore_warnings=True,
    )
    print(f"deployments bar-pipeline/nightly and upgrade-expert/upgrade in work pool {pool!r}")
    print(f"run them with: prefect worker start --pool {pool}")


def main() -> None:
    from prefect import serve

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default=".", help="the bar repository (default: .)")
    parser.add_argument("--cron", default=NIGHTLY, help=f"schedule of bar-pipeline/nightly (default: {NIGHTLY!r})")
    parser.add_argument(
        "--pool", help="register the deployments with this process work pool and exit, instead of serving"
    )
    args = parser.parse_args()
    if args.pool:
        to_pool(args.root, args.pool, args.cron)
    else:
        serve(*deployments(args.root, args.cron))


if __name__ == "__main__":
    main()
