"""Starting tensor-parallel workers with torchrun (one process per tensor-parallel rank)."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path


def threads_per_rank(nproc: int) -> int:
    """CPU threads each of `nproc` processes on this machine computes with: OMP_NUM_THREADS if
    set, else the cores shared out. Results depend on it (float sums split differently), so
    every MLflow run records it."""
    return max(1, int(os.environ.get("OMP_NUM_THREADS") or (os.cpu_count() or 1) // nproc))


def torchrun(module: str, nproc: int, args: list[str] = ()) -> None:
    """Run `python -m module *args` under torchrun with `nproc` processes on this machine."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        module,
        *args,
    ]
    with tempfile.TemporaryDirectory() as tmp:
        # A worker that fails on bad input or a diverged loss writes its one-line error here.
        error = Path(tmp) / "error"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "BAR_ERROR_FILE": str(error)}
        # torchrun would set OMP_NUM_THREADS=1 with a warning; bar.parallel.init sets threads itself.
        env["OMP_NUM_THREADS"] = str(threads_per_rank(nproc))
        result = subprocess.run(cmd, env=env)
        if result.returncode:
            reason = f": {error.read_text()}" if error.exists() else " (see the workers' output above)"
            raise SystemExit(f"error: {module}: torchrun workers failed with exit code {result.returncode}{reason}")
