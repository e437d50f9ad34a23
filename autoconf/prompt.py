"""Timed questions on the console, the SystemRescue way: a default and a countdown.

    Keyboard layout [us] (us, fr, de, ...) 9s: _

The countdown updates in place. Enter or the end of the countdown takes the default; a key
pressed restarts the countdown (a slow typist is never cut off, an abandoned half answer never
blocks the boot); Ctrl-C or Ctrl-D takes the default; a refused answer says why and asks again.
Without a terminal (not a tty) or with a timeout of 0 nothing is asked: the default is taken at
once. The terminal's settings are restored on every path, including exceptions.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import sys
import termios
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

MAX_ANSWER = 64
_ESCAPE_SEQUENCE = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|O.|.)?")
_ERASE = ("\x7f", "\x08")
_ENTER = ("\r", "\n")
_GIVE_UP = ("\x03", "\x04")  # Ctrl-C, Ctrl-D


class How(StrEnum):
    """How the answer was obtained."""

    TYPED = "typed"
    ENTER = "enter"  # Enter on an empty line: the default
    TIMEOUT = "timeout"
    NO_TERMINAL = "no-terminal"
    NOT_ASKED = "not-asked"  # timeout 0


@dataclass(frozen=True)
class Answer:
    value: str
    how: How

    @property
    def typed(self) -> bool:
        return self.how is How.TYPED


Validator = Callable[[str], str | None]  # answer -> None if fine, else the reason it is refused
KeyWait = Callable[[int, float], bool]  # (fd, seconds) -> True when a key can be read


def key_ready(fd: int, seconds: float) -> bool:
    """Wait up to `seconds` for input on `fd`; True when there is some."""
    ready, _, _ = select.select([fd], [], [], seconds)
    return bool(ready)


def choices_validator(choices: Sequence[str]) -> Validator:
    def check(answer: str) -> str | None:
        return None if answer in choices else f"{answer!r} is not one of: {', '.join(choices)}"

    return check


def ask(
    question: str,
    default: str,
    *,
    choices: Sequence[str] | None = None,
    validate: Validator | None = None,
    hint: str | None = None,
    timeout: int = 10,
    fd: int | None = None,
    out_fd: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    wait: KeyWait = key_ready,
) -> Answer:
    """Ask `question` on the terminal `fd` (stdin by default); never waits without a terminal.

    `choices` or `validate` check a typed answer; `hint` is shown after the default
    (by default the choices). Answers are compared as typed, without surrounding spaces.
    The countdown reads `clock` and waits for keys with `wait`.
    """
    if timeout <= 0:
        return Answer(default, How.NOT_ASKED)
    if fd is None:
        if sys.stdin is None:
            return Answer(default, How.NO_TERMINAL)
        try:
            fd = sys.stdin.fileno()
        except (OSError, ValueError):
            return Answer(default, How.NO_TERMINAL)
    if not os.isatty(fd):
        return Answer(default, How.NO_TERMINAL)
    if out_fd is None:
        out_fd = 1 if os.isatty(1) else fd
    check = validate or (choices_validator(choices) if choices else None)
    if hint is None and choices:
        hint = ", ".join(choices)
    try:
        saved = termios.tcgetattr(fd)
    except termios.error:
        return Answer(default, How.NO_TERMINAL)
    try:
        _character_mode(fd, saved)
        termios.tcflush(fd, termios.TCIFLUSH)  # keys pressed during the boot are no answer
        return _loop(question, default, hint, check, timeout, fd, out_fd, clock, wait)
    finally:
        with contextlib.suppress(termios.error):
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _character_mode(fd: int, saved: list) -> None:
    """Keys one at a time, no echo, no signals (Ctrl-C is read as a key): cbreak without ISIG."""
    mode = list(saved)
    mode[3] &= ~(termios.ICANON | termios.ECHO | termios.ISIG)
    mode[6] = list(saved[6])
    mode[6][termios.VMIN] = 1
    mode[6][termios.VTIME] = 0
    termios.tcsetattr(fd, termios.TCSADRAIN, mode)


def _loop(question: str, default: str, hint: str | None, check: Validator | None, timeout: int,
          fd: int, out_fd: int, clock: Callable[[], float], wait: KeyWait) -> Answer:
    label = f"{question} [{default}]" + (f" ({hint})" if hint else "")
    typed = ""
    deadline = clock() + timeout

    def draw() -> None:
        left = deadline - clock()
        if left < 0.05:  # about to time out: "0s" would only flash
            return
        left = int(left + 0.999)
        _write(out_fd, f"\r{label} {left}s: {typed}\x1b[K")

    draw()
    while True:
        now = clock()
        if now >= deadline:
            _write(out_fd, f"\r{label}: {default}\x1b[K\r\n")
            return Answer(default, How.TIMEOUT)
        # wake at the next whole second to redraw the countdown
        if not wait(fd, min(deadline - now, (deadline - now) % 1.0 or 1.0)):
            draw()
            continue
        try:
            chunk = os.read(fd, 256).decode("utf-8", errors="ignore")
        except OSError:  # the terminal went away (hangup): do not wait any longer
            return Answer(default, How.NO_TERMINAL)
        if not chunk:
            return Answer(default, How.NO_TERMINAL)
        deadline = clock() + timeout
        for key in _ESCAPE_SEQUENCE.sub("", chunk):
            if key in _GIVE_UP:
                _write(out_fd, f"\r{label}: {default}\x1b[K\r\n")
                return Answer(default, How.ENTER)
            if key in _ERASE:
                typed = typed[:-1]
            elif key in _ENTER:
                answer = typed.strip()
                if not answer:
                    _write(out_fd, f"\r{label}: {default}\x1b[K\r\n")
                    return Answer(default, How.ENTER)
                reason = check(answer) if check else None
                if reason is None:
                    _write(out_fd, f"\r{label}: {answer}\x1b[K\r\n")
                    return Answer(answer, How.TYPED)
                _write(out_fd, f"\r\n  {reason}\r\n")
                typed = ""
                deadline = clock() + timeout
                break  # the rest of this chunk was typed before the refusal was shown
            elif key.isprintable() and len(typed) < MAX_ANSWER:
                typed += key
        draw()


def _write(fd: int, text: str) -> None:
    data = text.encode()
    while data:
        try:
            written = os.write(fd, data)
        except InterruptedError:
            continue
        except OSError:
            return  # output is best effort: the answer matters more than its echo
        data = data[written:]
