"""The agent's one process runner: argument lists in, CompletedProcess out, CommandError on failure.

Every autoconf module runs commands through `run()`; nothing else calls subprocess. A command is
an argument list, never a shell string. A failing command raises `CommandError`, which carries the
argument list, the exit status and the captured stderr, and reads as one sentence on the console.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["CommandError", "run"]

STDERR_TAIL_CHARS = 2000


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
