"""Run model-written Python against a task's tests, never in this process.

Sandboxed (the default), the program runs under bubblewrap (`bwrap`, the Debian package
`bubblewrap`), in a file system made of the system's folders and this Python's, all
read-only; the user's files, home folder and /tmp are not in it. Its working folder
(`/sandbox`) and its /tmp are private, size-limited and in memory, the only places it can
write; the working folder starts empty. It has no network (a
network namespace with a loopback of its own), its own PID namespace (a timeout, or the
end of this process, kills everything it started) and its own session. Before the
program runs, the child limits itself: address space (~1 GiB), CPU seconds, file size and
no new processes; started by root, it first becomes `nobody`, as root ignores the
process limit.

Unsandboxed (only by the explicit opt-in `[eval] code_execution = "unsandboxed"`), the
program runs with the same limits (and, where the kernel allows it, without network) in a
plain child process in an empty temporary folder, as the user: it can read and change the
user's files.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from traitmap.errors import TraitmapError

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_MEMORY_MB = 1024
SANDBOXED, UNSANDBOXED = "sandboxed", "unsandboxed"
CODE_EXECUTION = (SANDBOXED, UNSANDBOXED)  # values of [eval] code_execution
PACKAGE = "bubblewrap"
OPT_IN = '[eval] code_execution = "unsandboxed" in the study file, or `traitmap run --unsandboxed-code`'
_MAX_OUTPUT_BYTES = 8 * 1024 * 1024
_TMP_BYTES = 64 * 1024 * 1024  # the sandbox's /tmp and working folder live in memory
_WORK_FOLDER = "/sandbox"
_NOBODY = 65534
_SYSTEM_FOLDERS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64")

# Runs in the child: read the program (stdin), give up root, limit itself, try to lose
# the network where no sandbox took it, then run the program.
_BOOTSTRAP = """
import ctypes, os, resource, sys
source = sys.stdin.buffer.read().decode("utf-8")
if {drop_root} and os.getuid() == 0:
    os.setgroups([])
    os.setgid({nobody})
    os.setuid({nobody})
def limit(kind, value):
    try:
        resource.setrlimit(kind, (value, value))
    except (ValueError, OSError):
        pass
limit(resource.RLIMIT_AS, {memory_bytes})
limit(resource.RLIMIT_CPU, {cpu_seconds})
limit(resource.RLIMIT_FSIZE, {max_output})
limit(resource.RLIMIT_NPROC, 0)
if {unshare_network}:
    libc = ctypes.CDLL(None, use_errno=True)
    CLONE_NEWNET, CLONE_NEWUSER = 0x40000000, 0x10000000
    if libc.unshare(CLONE_NEWNET) != 0:
        libc.unshare(CLONE_NEWUSER | CLONE_NEWNET)
    del libc, CLONE_NEWNET, CLONE_NEWUSER
del ctypes, os, resource, limit
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


def run_python(program: str, *, timeout: float = DEFAULT_TIMEOUT_S, memory_mb: int = DEFAULT_MEMORY_MB,
               sandboxed: bool = True) -> SandboxResult:
    """Run `program` (source text) in a limited child; passed iff it exits 0 in time.
    Sandboxed, a machine without a working bubblewrap is a TraitmapError, never a run."""
    if sandboxed:
        check_sandbox()
    return _run(program, timeout, memory_mb, sandboxed)


def sandbox_problem() -> str | None:
    """Why model-written code cannot run sandboxed on this machine; None when it can."""
    return _sandbox_problem(shutil.which("bwrap"))


def check_sandbox() -> None:
    """Refuse to go on where bubblewrap is missing or does not work, naming the package
    and the opt-in."""
    problem = sandbox_problem()
    if problem is not None:
        raise TraitmapError(f"{problem}; install the Debian package {PACKAGE} (apt-get install {PACKAGE}), or run "
                            f"model-written code unsandboxed, as you, with {OPT_IN}")


@functools.lru_cache(maxsize=None)
def _sandbox_problem(bwrap: str | None) -> str | None:
    if bwrap is None:
        return "model-written code runs under bubblewrap, and `bwrap` is not installed"
    result = _run("import socket\nassert not socket.if_nameindex()[1:]", 30, DEFAULT_MEMORY_MB, True)
    if not result.passed:
        return f"model-written code runs under bubblewrap, and `{bwrap}` does not work here ({result.detail})"
    return None


def _run(program: str, timeout: float, memory_mb: int, sandboxed: bool) -> SandboxResult:
    with tempfile.TemporaryDirectory(prefix="traitmap-sandbox-") as folder:
        run = Path(folder)
        (run / "program.py").write_text(program, encoding="utf-8")
        (run / "work").mkdir()
        bootstrap = _BOOTSTRAP.format(
            drop_root=sandboxed, nobody=_NOBODY, memory_bytes=memory_mb * 1024 * 1024,
            cpu_seconds=math.ceil(timeout) + 1, max_output=_MAX_OUTPUT_BYTES, unshare_network=not sandboxed,
        )
        python = [sys.executable, "-I", "-B", "-c", bootstrap]
        command = _bwrap_command() + python if sandboxed else python
        with (open(run / "program.py", "rb") as stdin, open(run / "stdout", "wb") as stdout,
              open(run / "stderr", "wb") as stderr):
            child = subprocess.Popen(command, cwd=run / "work", env={}, stdin=stdin, stdout=stdout, stderr=stderr,
                                     start_new_session=True)
            try:
                returncode = child.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                returncode = None
            finally:
                _kill_session(child)  # on timeout, and for any children left behind
        if returncode is None:
            return SandboxResult(False, "timeout", f"no exit within {timeout:g} s")
        if sandboxed and returncode > 128 and (returncode - 128) in signal.valid_signals():
            returncode = 128 - returncode  # bwrap reports a child killed by signal N as exit 128 + N
        return _classify(returncode, _tail(run / "stderr"))


def _bwrap_command() -> list[str]:
    """bubblewrap's arguments: the read-only system and Python folders, private /dev,
    /proc, /tmp and working folder, no network, its own PID namespace, killed with this
    process."""
    command = [shutil.which("bwrap"), "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net",
               "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if os.geteuid() != 0:  # root builds the sandbox without a user namespace, then drops to nobody inside
        command += ["--unshare-user"]
    for folder in _SYSTEM_FOLDERS:
        if os.path.islink(folder):
            command += ["--symlink", os.readlink(folder), folder]
        elif os.path.isdir(folder):
            command += ["--ro-bind", folder, folder]
    # The private /tmp first, then this Python's folders: a virtual environment that lives
    # under /tmp (a fresh clone there) is bound on top of it instead of hidden by it.
    command += ["--perms", "1777", "--size", str(_TMP_BYTES), "--tmpfs", "/tmp"]
    folders = _python_folders()
    for parent in dict.fromkeys(str(p) for folder in folders for p in reversed(Path(folder).parents)):
        if parent not in ("/", "/tmp"):
            command += ["--perms", "0755", "--dir", parent]  # bwrap alone would make them root's only
    for folder in folders:
        command += ["--ro-bind", folder, folder]
    return command + ["--perms", "1777", "--size", str(_TMP_BYTES), "--tmpfs", _WORK_FOLDER, "--dev", "/dev",
                      "--proc", "/proc", "--remount-ro", "/", "--chdir", _WORK_FOLDER]


def _python_folders() -> list[str]:
    """This Python's installation and virtual environment, where outside the system folders."""
    found = []
    for folder in (sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
                   os.path.dirname(os.path.realpath(sys.executable))):
        folder = os.path.realpath(folder)
        inside = [f for f in _SYSTEM_FOLDERS + tuple(found) if folder == f or folder.startswith(f + "/")]
        if not inside:
            found = [f for f in found if not f.startswith(folder + "/")] + [folder]
    return found


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
