"""Run a compiled macrostep in a private mount and PID namespace, so nothing can leak.

Every mount the script makes (the appliance overlay, /proc, /sys, /dev for chroots) exists only
in that namespace, and every process it starts dies with it: when the script ends, fails, is
interrupted, or build-iso itself is killed, the host is left with nothing mounted.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from builder.compile import MARK

_MARKER = re.compile("\x1eBI ([^\x1e]*)\x1e")
_PR_SET_PDEATHSIG = 1
TERM_GRACE_SECONDS = 10


def _die_with_parent() -> None:
    """In the child: be killed if build-iso dies, even by SIGKILL."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def namespace_argv(argv: list[str]) -> list[str]:
    return ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--propagation", "private",
            "--", *argv]


@dataclass
class ScriptResult:
    returncode: int
    failed_micro: int | None = None     # 1-based microstep index
    failed_cmd: int | None = None       # 1-based command index
    command_status: int | None = None   # the failing command's own exit status
    tail: tuple[str, ...] = ()


class ScriptRun:
    """One running macrostep script; `wait()` streams its output until it ends."""

    def __init__(self, script: Path, log: Path, env: dict[str, str],
                 on_output: Callable[[str], None] | None = None,
                 on_begin: Callable[[int], str | None] | None = None, tail_lines: int = 25):
        self.script = script
        self.log = log
        self.on_output = on_output
        self.on_begin = on_begin
        self.tail: deque[str] = deque(maxlen=tail_lines)
        self.proc = subprocess.Popen(
            namespace_argv(["bash", str(script)]), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def wait(self) -> ScriptResult:
        """Stream output to the log until the script ends; on Ctrl-C/SIGTERM stop it, re-raise."""
        result = ScriptResult(returncode=0)
        with self.log.open("ab") as log:
            try:
                self._pump(log, result)
            except BaseException:
                self.stop()
                self._pump(log, result)
                raise
        result.returncode = self.proc.wait()
        result.tail = tuple(self.tail)
        return result

    def _pump(self, log, result: ScriptResult) -> None:
        assert self.proc.stdout is not None
        for raw in iter(self.proc.stdout.readline, b""):
            self._line(raw.decode(errors="replace"), log, result)

    def _line(self, line: str, log, result: ScriptResult) -> None:
        if MARK in line:
            for event in _MARKER.findall(line):
                self._event(event.split(), result, log)
            line = _MARKER.sub("", line)
            if not line.strip():
                return
        log.write(line.encode())
        log.flush()
        self.tail.append(line.rstrip("\n"))
        if self.on_output:
            self.on_output(line.rstrip("\n"))

    def _event(self, fields: list[str], result: ScriptResult, log) -> None:
        if fields[:1] == ["begin"] and len(fields) == 2:
            self.tail.clear()
            header = self.on_begin(int(fields[1])) if self.on_begin else None
            if header:
                log.write(header.encode())
        elif fields[:1] == ["fail"] and len(fields) == 4:
            result.failed_micro, result.failed_cmd, result.command_status = map(int, fields[1:])

    def stop(self) -> None:
        """Ask the script to stop (its traps record where), then kill what remains."""
        if self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=TERM_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_interactive(script: Path, env: dict[str, str]) -> int:
    """Run a script attached to the terminal (a shell in the appliance), in a namespace."""
    proc = subprocess.Popen(namespace_argv(["bash", str(script)]), env=env,
                            preexec_fn=_die_with_parent)
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            continue
