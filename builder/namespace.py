"""Run a compiled macrostep in a private mount and PID namespace, so nothing can leak.

Every mount the script makes (the appliance overlay, /proc, /sys, /dev for chroots) exists only
in that namespace, and every process it starts dies with it: when the script ends, fails, is
interrupted, or build-iso itself is killed, the host is left with nothing mounted.
"""

from __future__ import annotations

import re
import subprocess
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from boot.proc import spawn, stop
from builder.compile import MARK

_MARKER = re.compile("\x1eBI ([^\x1e]*)\x1e")
TERM_GRACE_SECONDS = 10


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
    """One macrostep script; `wait()` runs it and streams its output until it ends."""

    def __init__(self, script: Path, log: Path, env: dict[str, str],
                 on_output: Callable[[str], None] | None = None,
                 on_begin: Callable[[int], str | None] | None = None, tail_lines: int = 25):
        self.script = script
        self.log = log
        self.on_output = on_output
        self.on_begin = on_begin
        self.tail: deque[str] = deque(maxlen=tail_lines)
        self.env = env

    def wait(self) -> ScriptResult:
        """Run the script, its output to the log; on Ctrl-C/SIGTERM stop it, re-raise.

        Its own session keeps our terminal's Ctrl-C from it: it is asked to stop (its traps
        record where) and given TERM_GRACE_SECONDS, and its last words still reach the log.
        """
        result = ScriptResult(returncode=0)
        with self.log.open("ab") as log, spawn(
            namespace_argv(["bash", str(self.script)]), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=self.env, inherit_env=False, new_session=True,
            die_with_parent=True, grace=TERM_GRACE_SECONDS,
        ) as proc:
            try:
                self._pump(proc, log, result)
            except BaseException:
                stop(proc, grace=TERM_GRACE_SECONDS)
                self._pump(proc, log, result)
                raise
            result.returncode = proc.wait()
        result.tail = tuple(self.tail)
        return result

    def _pump(self, proc: subprocess.Popen, log, result: ScriptResult) -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
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


def run_interactive(script: Path, env: dict[str, str]) -> int:
    """Run a script attached to the terminal (a shell in the appliance), in a namespace.

    Ctrl-C belongs to the shell (it shares our terminal): we wait on until it exits.
    """
    with spawn(namespace_argv(["bash", str(script)]), stdin=None, env=env, inherit_env=False,
               die_with_parent=True) as proc:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:
                continue
