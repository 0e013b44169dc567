"""Run model-written Python against a task's tests, never in this process.

Each run gets a fresh `python -I` child in an empty temporary directory with an empty
environment and its own session, so a timeout kills everything it started. Before the
program runs, the child limits itself: address space (~1 GiB), CPU seconds, file size,
no new processes, and, where the kernel allows it, a new network namespace (no
network). This is best effort, not a security boundary: run untrusted code inside a
container as well.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MEMORY_MB = 1024
_MAX_OUTPUT_BYTES = 8 * 1024 * 1024

# Runs in the child: limit itself, try to lose the network, then run program.py.
# Reading the program before unsharing keeps it readable if the child becomes 'nobody'.
_BOOTSTRAP = """
import ctypes, resource, sys
def limit(kind, value):
    try:
        resource.setrlimit(kind, (value, value))
    except (ValueError, OSError):
        pass
limit(resource.RLIMIT_AS, {memory_bytes})
limit(resource.RLIMIT_CPU, {cpu_seconds})
limit(resource.RLIMIT_FSIZE, {max_output})
limit(resource.RLIMIT_NPROC, 0)
source = open("program.py", encoding="utf-8").read()
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET, CLONE_NEWUSER = 0x40000000, 0x10000000
if libc.unshare(CLONE_NEWNET) != 0:
    libc.unshare(CLONE_NEWUSER | CLONE_NEWNET)
del ctypes, resource, limit, libc, CLONE_NEWNET, CLONE_NEWUSER
sys.argv = ["program.py"]
exec(compile(source, "program.py", "exec"), {{"__name__": "__main__", "__builtins__": __builtins__}})
"""

_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::|$)")
_ERROR_KINDS = {
    "AssertionError": "assertion",
    "SyntaxError": "syntax",
    "IndentationError": "syntax",
    "TabError": "syntax",
    "MemoryError": "memory",
    "TimeoutError": "timeout",
    "RecursionError": "recursion",
}


@dataclass(frozen=True)
class SandboxResult:
    """Outcome of one run.

    error is None when the program exited 0; otherwise one of "timeout", "assertion",
    "syntax", "memory", "recursion", "exception" (any other uncaught exception),
    "exit" (non-zero exit without a traceback), "killed" (ended by a signal).
    detail is the exception line or a short reason, for records and debugging.
    """

    passed: bool
    error: str | None
    detail: str = ""


def run_python(program: str, *, timeout: float = DEFAULT_TIMEOUT_S, memory_mb: int = DEFAULT_MEMORY_MB) -> SandboxResult:
    """Run `program` (source text) in a limited subprocess; passed iff it exits 0 in time."""
    with tempfile.TemporaryDirectory(prefix="traitmap-sandbox-") as workdir:
        work = Path(workdir)
        (work / "program.py").write_text(program, encoding="utf-8")
        bootstrap = _BOOTSTRAP.format(
            memory_bytes=memory_mb * 1024 * 1024,
            cpu_seconds=math.ceil(timeout) + 1,
            max_output=_MAX_OUTPUT_BYTES,
        )
        with open(work / "stdout", "wb") as stdout, open(work / "stderr", "wb") as stderr:
            child = subprocess.Popen(
                [sys.executable, "-I", "-B", "-c", bootstrap],
                cwd=work, env={}, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                start_new_session=True,
            )
            try:
                returncode = child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                returncode = None
            finally:
                _kill_session(child)  # on timeout, and for any children left behind
        if returncode is None:
            return SandboxResult(False, "timeout", f"no exit within {timeout:g} s")
        return _classify(returncode, _tail(work / "stderr"))


def _kill_session(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    child.wait()


def _tail(path: Path, size: int = 4000) -> str:
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - size))
        return handle.read().decode("utf-8", errors="replace")


def _classify(returncode: int, stderr: str) -> SandboxResult:
    if returncode == 0:
        return SandboxResult(True, None)
    if returncode < 0:
        number = -returncode
        if number == signal.SIGXCPU:
            return SandboxResult(False, "timeout", "CPU time limit")
        if number == signal.SIGXFSZ:
            return SandboxResult(False, "killed", "output size limit")
        return SandboxResult(False, "killed", f"signal {signal.Signals(number).name}")
    for line in reversed(stderr.strip().splitlines()):
        match = _EXCEPTION_LINE.match(line)
        if match:
            name = match.group(1).rsplit(".", 1)[-1]
            return SandboxResult(False, _ERROR_KINDS.get(name, "exception"), line.strip()[:300])
    return SandboxResult(False, "exit", f"exit status {returncode}")
