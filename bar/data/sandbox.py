"""Run untrusted Python functions (model output) in a locked-down child process.

    results = run_functions([(source, "triple", [[2], [5]]), ...])
    # -> [[6, 15], None, ...]: per program, entry(*args) for each argument list, or None

All programs of a call run one after another in ONE child (`python -I -S`, empty
environment, fresh temporary cwd; limits and the audit hook are set up by
_sandbox_child.py), which keeps a batch of RL rewards cheap. The child streams one result
line per program, so when it dies (a hang in C code, a crash) the parent knows which
program was running: that one fails and the programs after it run in a new child. One bad
program therefore never fails its neighbours.

Known limit of batching: programs share one interpreter, so a program that monkeypatches an
allowed module (`math.pi = 3`) affects the programs after it in the same call.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

# (source, entry function name, list of argument lists)
Program = tuple[str, str, list[list]]

_CHILD = Path(__file__).with_name("_sandbox_child.py")
_STARTUP_S = 5.0  # allowance for interpreter start-up on a machine busy with training
# A program gets `timeout_s` of processor time (the child's timer), and the parent kills a child
# whose program has not answered after _WALL_FACTOR * timeout_s + _GRACE_S of wall clock (stuck in
# C code, or waiting): the slack is for a machine busy with training, which stretches wall time.
_WALL_FACTOR = 4.0
_GRACE_S = 1.0
_READ_BYTES = 1 << 16


def run_functions(programs: Sequence[Program], timeout_s: float = 2.0, memory_mb: int = 256) -> list[list | None]:
    """For each program, the return values of `entry(*args)` for each argument list (after a
    JSON round trip, so tuples come back as lists), or None if anything failed: syntax error,
    missing entry, an exception, a denied operation, the time or memory limit, or a result
    that is not JSON-serialisable. `timeout_s` is the processor time of a program (all its calls
    together); one that computes no more but does not finish is stopped by a wall-clock deadline."""
    if timeout_s <= 0 or memory_mb <= 0:
        raise ValueError(f"timeout_s and memory_mb must be > 0, got {timeout_s}, {memory_mb}")
    jobs = [[str(source), str(entry), [list(args) for args in calls]] for source, entry, calls in programs]
    results: list[list | None] = [None] * len(jobs)
    remaining = list(range(len(jobs)))
    while remaining:
        finished = _run_child([jobs[i] for i in remaining], timeout_s, memory_mb)
        for index, outputs in zip(remaining, finished):
            results[index] = outputs
        # Either all finished, or the child died while running remaining[len(finished)]:
        # that program keeps its None and the rest go to a fresh child.
        remaining = remaining[len(finished) + 1 :]
    return results


class SandboxError(RuntimeError):
    """The sandbox itself failed (its child never started), as opposed to a program failing.
    Raised rather than returning None for everything, which would look like all-wrong code."""


def _run_child(jobs: list[list], timeout_s: float, memory_mb: int) -> list[list | None]:
    """Results of the jobs the child finished, in order (fewer than len(jobs) if it died)."""
    payload = {
        "programs": jobs,
        "timeout_s": timeout_s,
        "memory_mb": memory_mb,
        # A backstop for the whole child; each program is also limited to timeout_s.
        "cpu_s": math.ceil(_STARTUP_S + timeout_s * len(jobs)),
    }
    with tempfile.TemporaryDirectory(prefix="bar-sandbox-") as workdir:
        process = subprocess.Popen(
            [sys.executable, "-I", "-S", str(_CHILD)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,  # only start-up errors: the child then points fd 2 at /dev/null
            cwd=workdir,
            env={},
            start_new_session=True,  # its own process group, so one killpg gets everything
        )
        with process.stderr:
            try:
                try:
                    process.stdin.write(json.dumps(payload).encode("utf-8"))
                    process.stdin.close()
                except BrokenPipeError:  # the child died at start-up; _collect sees end of file
                    pass
                started, finished = _collect(process, len(jobs), timeout_s)
            finally:
                _kill(process)
            if not started:
                error = process.stderr.read().decode("utf-8", "replace").strip()[-2000:]
                raise SandboxError(f"the sandbox process did not start: {error or 'no error output'}")
    return finished


def _collect(process: subprocess.Popen, count: int, timeout_s: float) -> tuple[bool, list[list | None]]:
    """Whether the child started, and the results it sent before finishing or dying."""
    started = False
    finished: list[list | None] = []
    buffer = b""
    fd = process.stdout.fileno()
    deadline = time.monotonic() + _STARTUP_S
    while len(finished) < count:
        wait = deadline - time.monotonic()
        if wait <= 0:
            break  # the running program is stuck where the alarm cannot reach it
        ready, _, _ = select.select([fd], [], [], wait)
        if not ready:
            continue
        chunk = os.read(fd, _READ_BYTES)
        if not chunk:
            break  # the child died (memory, CPU limit, crash)
        *lines, buffer = (buffer + chunk).split(b"\n")
        for line in lines:
            try:
                record = json.loads(line)
                if record.get("ready") is True:
                    started = True
                    continue
                if not started or record["index"] != len(finished):
                    raise ValueError(f"unexpected record {record!r}")
            except (ValueError, KeyError, TypeError, AttributeError):
                return started, finished  # garbled protocol: treat like a death
            finished.append(record["results"])
        if lines:  # each line starts the clock of the next program
            deadline = time.monotonic() + _WALL_FACTOR * timeout_s + _GRACE_S
    return started, finished


def _kill(process: subprocess.Popen) -> None:
    # Kill the whole group before reaping the leader, so its id cannot have been reused.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
    process.stdout.close()
    with contextlib.suppress(OSError):  # unsent input after a start-up crash
        process.stdin.close()
