"""The child process of bar.data.sandbox: runs untrusted functions under limits.

Started as `python -I -S <this file>` with an empty environment in a fresh temporary
directory; stdlib only, imports nothing from bar. Reads one JSON payload from stdin:
{"programs": [[source, entry, [args, ...]], ...], "timeout_s": float, "memory_mb": int,
"cpu_s": int}, and writes one line per program, in order, as soon as it finishes:
{"index": i, "results": [one JSON value per args] or null}, after a first
{"ready": true} line once start-up is over. Streaming lets the parent tell
exactly which program was running if this process dies.

Layers of defence (each catches what the others miss):
- rlimits: address space, CPU seconds, no file writes (FSIZE=0), no new processes (NPROC;
  not enforced for root, hence the audit hook), no core dumps;
- an import guard in the programs' builtins: only an allowlist of harmless modules;
- an audit hook (cannot be removed once added) that denies process creation, signals to
  other processes, sockets, writing/removing files, ctypes, raising rlimits, threads,
  reading frames off tracebacks/generators, and imports of dangerous modules;
- a per-program processor-time timer (SIGPROF); the parent also kills this process when a
  program overruns a wall-clock deadline (for C-level hangs that never return to the
  interpreter, and for programs that wait rather than compute).
"""

import json
import os
import resource
import signal
import sys

# What a program's own import statements may load (everything else: ImportError).
ALLOWED_IMPORTS = frozenset(
    {
        "__future__", "abc", "math", "cmath", "itertools", "functools", "collections", "re",
        "string", "operator", "heapq", "bisect", "statistics", "fractions", "decimal",
        "random", "typing", "dataclasses", "copy", "json", "enum", "array", "numbers",
        "datetime", "textwrap", "unicodedata",
    }
)  # fmt: skip
# Denied for every import in this process (the audit hook), not just the program's own
# import statements; must not include anything the allowed modules import themselves.
DENIED_IMPORTS = frozenset(
    {
        "os", "posix", "subprocess", "_posixsubprocess", "socket", "_socket", "shutil",
        "ctypes", "_ctypes", "multiprocessing", "_multiprocessing", "pty", "sys", "signal",
        "resource", "mmap", "fcntl",
    }
)  # fmt: skip
DENIED_EVENTS = frozenset(
    {
        "os.system", "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn",
        "os.kill", "os.killpg", "os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod",
        "os.chown", "os.link", "os.symlink", "os.truncate", "os.utime", "os.chdir",
        "os.putenv", "os.unsetenv", "os.setxattr", "os.removexattr", "os.chflags",
        "subprocess.Popen", "resource.setrlimit", "resource.prlimit", "_thread.start_new_thread",
        "pty.spawn",
    }
)  # fmt: skip
DENIED_EVENT_PREFIXES = ("socket.", "ctypes.", "shutil.", "fcntl.", "mmap.")
# Frames lead out of the program's namespace (e.g. exception.__traceback__.tb_frame.f_back);
# reading these attributes raises the "object.__getattr__" audit event.
DENIED_ATTRIBUTES = frozenset({"tb_frame", "gi_frame", "cr_frame", "ag_frame"})
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
MAX_OUTPUT_CHARS = 1_000_000  # larger results count as failures rather than flood the pipe


class ProgramTimeout(BaseException):
    """Raised by the alarm; a BaseException so `except Exception` in a program misses it."""


def _audit(event, args):
    if event in DENIED_EVENTS or event.startswith(DENIED_EVENT_PREFIXES):
        raise RuntimeError(f"sandbox: {event} is not allowed")
    if event == "object.__getattr__" and args[1] in DENIED_ATTRIBUTES:
        raise RuntimeError(f"sandbox: reading {args[1]} is not allowed")
    if event == "import" and args[0].partition(".")[0] in DENIED_IMPORTS:
        raise RuntimeError(f"sandbox: import of {args[0]} is not allowed")
    if event == "open":
        _, mode, flags = args
        writes = isinstance(mode, str) and any(c in mode for c in "wax+")
        if writes or (isinstance(flags, int) and flags & _WRITE_FLAGS):
            raise RuntimeError("sandbox: opening files for writing is not allowed")


_real_import = __import__


def _guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
    if level != 0 or name.partition(".")[0] not in ALLOWED_IMPORTS:
        raise ImportError(f"sandbox: import of {name!r} is not allowed")
    return _real_import(name, globals, locals, fromlist, level)


def _program_builtins():
    import builtins

    allowed = dict(vars(builtins))
    for name in ("open", "input", "breakpoint", "exit", "quit", "help", "copyright", "credits"):
        allowed.pop(name, None)
    allowed["__import__"] = _guarded_import
    return allowed


def _limit_resources(memory_mb, cpu_s):
    memory = memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # With FSIZE=0 a write to a file raises EFBIG instead of killing us with SIGXFSZ.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


_armed = False


def _on_alarm(signum, frame):
    if _armed:
        raise ProgramTimeout()


def _run(program, builtins_dict, timeout_s):
    """JSON text of the program's results, or None on any failure."""
    global _armed
    source, entry, calls = program
    # The timer counts the processor time of this process (not the wall clock, which a machine
    # busy with training stretches), and repeats so a program that catches the first
    # ProgramTimeout gets another. The parent's wall-clock deadline stops a program that waits.
    _armed = True
    signal.setitimer(signal.ITIMER_PROF, timeout_s, 0.05)
    try:
        namespace = {"__builtins__": builtins_dict, "__name__": "__sandbox__"}
        exec(compile(source, "<program>", "exec"), namespace)
        function = namespace[entry]
        # Fresh argument copies per call, so a function that mutates its input cannot
        # change the next test's input.
        outputs = [function(*json.loads(json.dumps(args))) for args in calls]
        encoded = json.dumps(outputs)
        return encoded if len(encoded) <= MAX_OUTPUT_CHARS else None
    except BaseException:  # noqa: BLE001 - any failure of untrusted code is just "no result"
        return None
    finally:
        _armed = False
        signal.setitimer(signal.ITIMER_PROF, 0)


def _write(fd, text):
    data = text.encode("utf-8")
    while data:  # a large write to a pipe may be partial
        data = data[os.write(fd, data) :]


def main():
    payload = json.loads(sys.stdin.buffer.read())
    # Results go to a private copy of stdout; fd 1 and 2 become /dev/null so a program's
    # print() cannot corrupt the protocol.
    results_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    _limit_resources(payload["memory_mb"], payload["cpu_s"])
    signal.signal(signal.SIGPROF, _on_alarm)
    # Writing a missing .pyc would be a denied file write and fail the import instead.
    sys.dont_write_bytecode = True
    builtins_dict = _program_builtins()
    sys.addaudithook(_audit)
    _write(results_fd, '{"ready": true}\n')  # start-up is over: the parent's per-program clock starts
    for index, program in enumerate(payload["programs"]):
        try:
            encoded = _run(program, builtins_dict, payload["timeout_s"])
        except ProgramTimeout:  # the alarm fired between the program and the disarm
            encoded = None
        _write(results_fd, f'{{"index": {index:d}, "results": {encoded or "null"}}}\n')


if __name__ == "__main__":
    main()
