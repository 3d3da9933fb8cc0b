"""Starting a stage's workers with torchrun: tp_size x dp_size processes, on one machine or
several.

Several machines ("nodes"): every node runs the same stage's workers with its node rank and one
rendezvous endpoint, from the environment: BAR_NNODES, BAR_NODE_RANK and BAR_RDZV_ENDPOINT
(host:port of node 0). Node 0 runs the stage itself (`dvc repro`, which also records and
publishes); every other node runs `python -m bar.launch <stage> [<item>]`, which starts only its
workers (docs/cluster.md has a Slurm script).
"""

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Nodes:
    count: int = 1
    rank: int = 0
    endpoint: str | None = None

    @classmethod
    def from_env(cls) -> "Nodes":
        def number(key: str, default: int, low: int) -> int:
            value = os.environ.get(key, str(default))
            if not value.isdigit() or int(value) < low:
                raise SystemExit(f"error: environment {key} = {value!r}: must be an integer >= {low}")
            return int(value)

        nodes = cls(number("BAR_NNODES", 1, 1), number("BAR_NODE_RANK", 0, 0), os.environ.get("BAR_RDZV_ENDPOINT"))
        if nodes.rank >= nodes.count:
            raise SystemExit(
                f"error: environment BAR_NODE_RANK = {nodes.rank}: must be below BAR_NNODES = {nodes.count}"
            )
        if nodes.count > 1 and not nodes.endpoint:
            raise SystemExit(
                f"error: environment BAR_NNODES = {nodes.count} needs BAR_RDZV_ENDPOINT=<host of node 0>:<free port>"
            )
        return nodes

    def per_node(self, nproc: int) -> int:
        if nproc % self.count:
            raise SystemExit(
                f"error: environment BAR_NNODES = {self.count}: must divide the stage's {nproc} processes "
                f"(tp_size x dp_size)"
            )
        return nproc // self.count


def threads_per_rank(nproc: int) -> int:
    """CPU threads each of `nproc` processes on this machine computes with: OMP_NUM_THREADS if
    set, else the stage's cores shared out (BAR_CORES, which the bar-pipeline flow sets when it
    runs stages side by side; else every core). Results depend on it (float sums split
    differently), so every MLflow run records it."""
    cores = int(os.environ.get("BAR_CORES") or os.cpu_count() or 1)
    return max(1, int(os.environ.get("OMP_NUM_THREADS") or cores // nproc))


def command(module: str, nproc: int, args: list[str], nodes: Nodes) -> list[str]:
    """torchrun's command line for this node's share of `nproc` workers of `module`."""
    where = ["--standalone"]
    if nodes.count > 1:
        where = [
            f"--nnodes={nodes.count}",
            f"--node-rank={nodes.rank}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={nodes.endpoint}",
            f"--rdzv-id={module}",
        ]
    per_node = nodes.per_node(nproc)
    return [sys.executable, "-m", "torch.distributed.run", *where, f"--nproc-per-node={per_node}", "-m", module, *args]


def run_workers(module: str, nproc: int, args: list[str], here) -> None:
    """A stage's workers: `here()` in this process when the stage is one process on one machine
    (the same code on a process group of one, without the seconds a torchrun launcher and a fresh
    worker take to start), else `module`'s workers under torchrun."""
    if nproc == 1 and Nodes.from_env().count == 1:
        here()
    else:
        torchrun(module, nproc, args)


def torchrun(module: str, nproc: int, args: list[str] = ()) -> None:
    """Run `python -m module *args` under torchrun: `nproc` processes in all, shared over the
    nodes the environment names (one machine by default)."""
    nodes = Nodes.from_env()
    cmd = command(module, nproc, list(args), nodes)
    with tempfile.TemporaryDirectory() as tmp:
        # A worker that fails on bad input or a diverged loss writes its one-line error here.
        error = Path(tmp) / "error"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "BAR_ERROR_FILE": str(error)}
        # torchrun would set OMP_NUM_THREADS=1 with a warning; bar.parallel.init sets threads itself.
        env["OMP_NUM_THREADS"] = str(threads_per_rank(nodes.per_node(nproc)))
        result = subprocess.run(cmd, env=env)
        if result.returncode:
            reason = f": {error.read_text()}" if error.exists() else " (see the workers' output above)"
            raise SystemExit(f"error: {module}: torchrun workers failed with exit code {result.returncode}{reason}")


STAGES = (
    "pretrain_base",
    "train_anchor",
    "train_expert",
    "fit_router",
    "baseline",
)  # the stages that train across processes
NAMED = ("train_expert", "baseline")  # stages of one expert or baseline


def main(argv: list[str] | None = None) -> None:
    """`python -m bar.launch <stage> [<name>]`: the workers of a stage on a node other than the
    first (BAR_NODE_RANK > 0), for the stage's processes as the specs say."""
    import argparse

    from bar.specs import Specs

    p = argparse.ArgumentParser(prog="python -m bar.launch", description=main.__doc__)
    p.add_argument("stage", choices=STAGES)
    p.add_argument("name", nargs="?", help="train_expert: the expert; baseline: the baseline (params.yaml)")
    args = p.parse_args(argv)
    if (args.stage in NAMED) != (args.name is not None):
        p.error(f"{' and '.join(NAMED)} take the name of what they train, and only they take one")
    torchrun(*workers(Specs(), args.stage, args.name))


def workers(specs, stage: str, name: str | None = None) -> tuple[str, int, list[str]]:
    """The module, process count and arguments of `stage`'s workers, as the specs lay them out."""
    layout = {
        "pretrain_base": lambda: specs.train.pretrain,
        "train_anchor": lambda: specs.train.anchor,
        "train_expert": lambda: specs.expert(name),
        "fit_router": lambda: specs.router,
        "baseline": lambda: specs.baselines,
    }[stage]()
    return f"{__package__}.stages.{stage}", layout.tp_size * layout.dp_size, [*([name] if name else []), "--worker"]


if __name__ == "__main__":
    main()
