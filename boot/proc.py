"""The one owner of processes: `run()` for short commands, `spawn()` for long-running ones.

A command is an argument list, never a shell string. `run()` captures its output; a failing
command raises `CommandError`, which carries the argument list, the exit status and the captured
stderr, and reads as one sentence on the console. `spawn()` is a context manager for a daemon, a
VM or a build script: on any exit of its block (normal, exception, Ctrl-C) it signals what still
runs (its process group when it leads one), waits up to a deadline, kills it and reaps it.
`start()` alone is for a process that must outlive us; `stop_pids()` stops such processes, the
same way, from a later program (they are not its children).
Nothing else in autoconf, boot or builder starts or stops a process.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO

__all__ = ["CommandError", "pid_alive", "run", "spawn", "start", "stop", "stop_pids"]

STDERR_TAIL_CHARS = 2000
STOP_GRACE_SECONDS = 10.0  # how long a stopped process may take to exit before it is killed
PID_POLL_SECONDS = 0.1
_PR_SET_PDEATHSIG = 1

Stream = int | IO | None  # subprocess's stdin/stdout/stderr: PIPE, DEVNULL, a file, None (inherit)


class CommandError(Exception):
    """A command failed (non-zero exit, not found, or timed out)."""

    def __init__(self, argv: Sequence[str], returncode: int, stderr: str = "") -> None:
        self.argv = [str(a) for a in argv]
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(self.describe())

    @property
    def command(self) -> str:
        """The command as a user could paste it into a shell."""
        return shlex.join(self.argv)

    def describe(self) -> str:
        """One line: what ran, how it ended, the last line of stderr, advice when obvious."""
        if self.returncode == 127:
            name = self.argv[0] if self.argv else "?"
            return f"{self.command}: command not found (is the package providing {name} installed?)"
        if self.returncode == -signal.SIGKILL and "timed out" in self.stderr:
            return f"{self.command}: {self.stderr.strip()}"
        if self.returncode < 0:
            how = f"killed by signal {signal.Signals(-self.returncode).name}"
        else:
            how = f"exit status {self.returncode}"
        last = [line for line in self.stderr.strip().splitlines() if line.strip()]
        return f"{self.command} failed ({how})" + (f": {last[-1].strip()}" if last else "")

    def __str__(self) -> str:
        return self.describe()


def run(
    argv: Sequence[str | os.PathLike[str]],
    check: bool = True,
    input: str | None = None,  # noqa: A002 - same name as subprocess.run
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` and capture its stdout/stderr as text.

    `env` entries are added to (not substituted for) the current environment. With `check`
    (the default) a non-zero exit raises CommandError; a missing program always raises
    CommandError with status 127; a timeout kills the command and raises CommandError.
    """
    args = [os.fspath(a) for a in argv]
    if not args:
        raise ValueError("run() needs a non-empty argument list")
    full_env = None
    if env is not None:
        full_env = dict(os.environ)
        full_env.update(env)
    try:
        result = subprocess.run(
            args,
            input=input,
            env=full_env,
            cwd=Path(cwd) if cwd is not None else None,
            timeout=timeout,
            capture_output=True,
            text=True,
            stdin=None if input is not None else subprocess.DEVNULL,
            check=False,
        )
    except FileNotFoundError as exc:
        raise CommandError(args, 127, str(exc)) from None
    except PermissionError as exc:
        raise CommandError(args, 126, str(exc)) from None
    except subprocess.TimeoutExpired:
        raise CommandError(args, -signal.SIGKILL, f"timed out after {timeout:g} s") from None
    if check and result.returncode != 0:
        raise CommandError(args, result.returncode, result.stderr or "")
    return result


def _environment(env: Mapping[str, str] | None, inherit_env: bool) -> dict[str, str] | None:
    if inherit_env:
        return None if env is None else {**os.environ, **env}
    return dict(env or {})


def _die_with_parent() -> None:
    """In the child: be killed if our process dies, even by SIGKILL."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def start(
    argv: Sequence[str | os.PathLike[str]],
    *,
    stdin: Stream = subprocess.DEVNULL,
    stdout: Stream = None,
    stderr: Stream = None,
    env: Mapping[str, str] | None = None,
    inherit_env: bool = True,
    cwd: str | os.PathLike[str] | None = None,
    pass_fds: Collection[int] = (),
    new_session: bool = False,
    die_with_parent: bool = False,
) -> subprocess.Popen[bytes]:
    """Start `argv` and return at once; `spawn()` is this with the stop on any way out.

    Alone, for a process that must outlive this program (a VM left running until a later
    `stop_pids`). stdin is /dev/null unless given (None: ours); stdout and stderr are ours
    unless given. `env` entries are added to the current environment, or are the whole
    environment with `inherit_env=False`. `new_session` puts the process in a session (and
    process group) of its own: our terminal's Ctrl-C does not reach it, and stopping it stops
    the whole group. `die_with_parent` has the kernel kill it when we die, even by SIGKILL.
    A missing program raises CommandError with status 127, as `run()` does.
    """
    args = [os.fspath(a) for a in argv]
    if not args:
        raise ValueError("start() needs a non-empty argument list")
    try:
        return subprocess.Popen(
            args, stdin=stdin, stdout=stdout, stderr=stderr, env=_environment(env, inherit_env),
            cwd=Path(cwd) if cwd is not None else None, pass_fds=tuple(pass_fds),
            start_new_session=new_session,
            preexec_fn=_die_with_parent if die_with_parent else None,
        )
    except FileNotFoundError as exc:
        raise CommandError(args, 127, str(exc)) from None
    except PermissionError as exc:
        raise CommandError(args, 126, str(exc)) from None


@contextlib.contextmanager
def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    stdin: Stream = subprocess.DEVNULL,
    stdout: Stream = None,
    stderr: Stream = None,
    env: Mapping[str, str] | None = None,
    inherit_env: bool = True,
    cwd: str | os.PathLike[str] | None = None,
    pass_fds: Collection[int] = (),
    new_session: bool = False,
    die_with_parent: bool = False,
    stop_signal: int = signal.SIGTERM,
    grace: float = STOP_GRACE_SECONDS,
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `argv` (as `start()` does) for a `with` block; on any exit of the block, `stop()` it.

    The block gets the Popen; leaving it, normally or by an exception or Ctrl-C, sends what
    still runs `stop_signal`, waits up to `grace` seconds, kills it and reaps it.
    """
    process = start(argv, stdin=stdin, stdout=stdout, stderr=stderr, env=env,
                    inherit_env=inherit_env, cwd=cwd, pass_fds=pass_fds,
                    new_session=new_session, die_with_parent=die_with_parent)
    with process:
        try:
            yield process
        finally:
            stop(process, stop_signal, grace)


def _signal(process: subprocess.Popen, sig: int) -> None:
    """Send `sig` to the process, or to its whole process group when it leads one."""
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(process.pid) == process.pid:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM,
         grace: float = STOP_GRACE_SECONDS) -> int:
    """Signal a child that still runs, wait up to `grace` seconds, kill it, reap it; its status.

    Interrupted while it waits (a second Ctrl-C), it still kills and reaps before it re-raises.
    """
    if process.poll() is not None:
        return process.returncode
    try:
        _signal(process, sig)
        process.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if process.poll() is None:
            _signal(process, signal.SIGKILL)
            process.wait()
    return process.returncode


def pid_alive(pid: int, proc_root: Path = Path("/proc")) -> bool:
    """Whether `pid` is a process that still runs (a zombie has ended)."""
    try:
        stat = (proc_root / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def stop_pids(
    pids: Iterable[int],
    alive: Callable[[int], bool] = pid_alive,
    sig: int = signal.SIGTERM,
    grace: float = STOP_GRACE_SECONDS,
) -> None:
    """Stop processes that are not our children: `sig`, up to `grace` seconds, then SIGKILL.

    A pid may have been reused since it was recorded, so `alive(pid)` (the process is still the
    one meant) is asked before each signal, and the wait ends when it is false for every pid.
    """
    pids = [p for p in pids if alive(p)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + grace
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(PID_POLL_SECONDS)
    for pid in pids:
        if alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
