"""What a run of the `bar-pipeline` flow has to do: the stages its targets need, in DAG order,
and the ones DVC reports as changed. No Prefect here: a run from the command line asks DVC in a
process of its own while the flow's process imports Prefect (`Prefetch`), the two costs of a
no-op run side by side instead of one after the other.

    python -m flows.todo [--root DIR] [TARGET ...]    # the plan as JSON
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from graphlib import TopologicalSorter
from pathlib import Path


@dataclass
class Plan:
    order: list[str]  # every stage the targets need, upstream first
    upstream: dict[str, set[str]]
    needed: set[str]  # what must run: what DVC reports as changed, and everything downstream of it


def plan(root: Path, targets: list[str]) -> Plan:
    """Every stage the targets need, in DAG order, and those that must run: the ones DVC
    reports as changed (`dvc status --with-deps`) and everything downstream of them."""
    from dvc.repo import Repo, lock_repo

    # In the repository, as `dvc dag` and `dvc status` run: DVC names stages relative to it.
    # Under the repository's lock, as `dvc status`; each stage's status is `dvc status`'s entry
    # for it (asked of the stages collected once, not collected again).
    with contextlib.chdir(root), Repo(".") as repo, lock_repo(repo):
        stages = {s: s.addressing for t in targets for s in repo.stage.collect(t, with_deps=True)}
        graph = {name: {stages[u] for u in repo.index.graph.successors(s) if u in stages} for s, name in stages.items()}
        changed = set().union(*(s.status(check_updates=True) for s in stages))
    # By name where the DAG leaves the order open: DVC's and a set's order vary with the process's hash seed.
    order = list(TopologicalSorter({s: sorted(graph[s]) for s in sorted(graph)}).static_order())
    run = set()
    for stage in order:  # upstream first, so one pass propagates
        if stage in changed or graph[stage] & run:
            run.add(stage)
    return Plan(order, graph, run)


def arguments() -> argparse.ArgumentParser:
    """The flow's command line (`python -m flows.pipeline`)."""
    parser = argparse.ArgumentParser(description="Run the bar pipeline as a Prefect flow.")
    parser.add_argument(
        "targets",
        nargs="*",
        help="DVC stages to bring up to date (default: dvc.yaml, the main pipeline; baselines/dvc.yaml: the baselines)",
    )
    parser.add_argument("--root", default=".", help="the bar repository (default: .)")
    parser.add_argument(
        "--max-parallel", type=int, default=None, help="stages at once (default: params.yaml: max_parallel)"
    )
    return parser


def key(root: str | Path, targets: list[str] | None) -> tuple[str, tuple[str, ...]]:
    """What a plan is of: the repository and the targets (default: dvc.yaml, the main pipeline)."""
    return str(Path(root).resolve()), tuple(targets or ["dvc.yaml"])


class Prefetch:
    """`python -m flows.todo` started now for the flow's command line; `take` hands its plan to
    the flow run it was started for, once (later runs, and any failure, ask DVC in-process, so
    an error in a DVC file is raised where it always was)."""

    def __init__(self, argv: list[str]):
        args, _ = arguments().parse_known_args(argv)
        self.key = key(args.root, args.targets)
        cmd = [sys.executable, "-m", "flows.todo", "--root", self.key[0], *self.key[1]]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def take(self, root: Path, targets: list[str]) -> Plan | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        out, _ = proc.communicate()
        if proc.returncode or key(root, targets) != self.key:
            return None
        found = json.loads(out)
        return Plan(found["order"], {s: set(u) for s, u in found["upstream"].items()}, set(found["needed"]))


def main() -> None:
    args = arguments().parse_args()
    root, targets = key(args.root, args.targets)
    found = asdict(plan(Path(root), list(targets)))
    print(
        json.dumps(
            found
            | {"upstream": {s: sorted(u) for s, u in found["upstream"].items()}, "needed": sorted(found["needed"])}
        )
    )


if __name__ == "__main__":
    main()
