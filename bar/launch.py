"""Starting tensor-parallel workers with torchrun (one process per tensor-parallel rank)."""

import os
import subprocess
import sys


def torchrun(module: str, nproc: int, args: list[str] = ()) -> None:
    """Run `python -m module *args` under torchrun with `nproc` processes on this machine."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={nproc}", "-m", module, *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # torchrun would set OMP_NUM_THREADS=1 with a warning; bar.parallel.init sets threads itself.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    result = subprocess.run(cmd, env=env)
    if result.returncode:
        raise SystemExit(f"{module}: torchrun workers failed with exit code {result.returncode}")
