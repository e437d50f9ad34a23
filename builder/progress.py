"""What build-iso shows while it works: live on a terminal, plain lines elsewhere (CI, logs)."""

from __future__ import annotations

import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TextIO


@dataclass
class StepTime:
    name: str
    seconds: float
    status: str   # "built", "checkpoint", "failed", "stopped"


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m:02d}:{s:02d}"


@dataclass
class Progress:
    """Plain line output; the base of the live display."""

    stream: TextIO = field(default_factory=lambda: sys.stdout)
    verbose: bool = False
    times: list[StepTime] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    macro: str = ""
    micro: str = ""
    index: int = 0
    total: int = 0
    macro_started: float = 0.0

    def say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def macrostep(self, index: int, total: int, name: str) -> None:
        self.index, self.total, self.macro, self.micro = index, total, name, ""
        self.macro_started = time.monotonic()
        self.say(f"[{index}/{total}] {name}")

    def restored(self, index: int, total: int, name: str) -> None:
        self.times.append(StepTime(name, 0.0, "checkpoint"))
        self.say(f"[{index}/{total}] {name}: restored from checkpoint")

    def microstep(self, name: str) -> None:
        self.micro = name
        self.say(f"  - {self.macro}/{name}")

    def output(self, line: str) -> None:
        if self.verbose:
            self.say(f"    {line}")

    def finished(self, status: str) -> float:
        seconds = time.monotonic() - self.macro_started
        self.times.append(StepTime(self.macro, seconds, status))
        self.say(f"  {self.macro}: {status} in {seconds:.1f}s")
        return seconds

    def summary(self) -> None:
        total = time.monotonic() - self.started
        width = max([len("macrostep"), *(len(t.name) for t in self.times)])
        self.say("")
        self.say(f"{'macrostep':<{width}}  {'time':>8}  status")
        for t in self.times:
            self.say(f"{t.name:<{width}}  {t.seconds:>7.1f}s  {t.status}")
        self.say(f"{'total':<{width}}  {total:>7.1f}s")

    def close(self) -> None:
        pass

    def pause(self) -> None:
        """Leave the terminal to a prompt or a shell."""


class LiveProgress(Progress):
    """A live panel: macrostep i/N, current microstep, elapsed time, the last output lines."""

    def __init__(self, stream: TextIO | None = None, verbose: bool = False):
        super().__init__(stream=stream or sys.stdout, verbose=verbose)
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=self.stream)
        self.recent: deque[str] = deque(maxlen=6)
        self.live = Live(console=self.console, refresh_per_second=4, transient=True,
                         get_renderable=self._render)
        self.live.start()

    def _render(self):
        from rich.text import Text

        text = Text()
        if self.macro:
            now = time.monotonic()
            text.append(f"[{self.index}/{self.total}] ", style="bold cyan")
            text.append(self.macro, style="bold")
            if self.micro:
                text.append(f" › {self.micro}")
            elapsed = _clock(now - self.macro_started)
            text.append(f"   {elapsed} (total {_clock(now - self.started)})", style="dim")
            for line in self.recent:
                text.append("\n    " + line[:150], style="dim")
        return text

    def say(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    def microstep(self, name: str) -> None:
        self.micro = name
        self.recent.clear()

    def output(self, line: str) -> None:
        self.recent.append(line)
        if self.verbose:
            self.say(f"    {line}")

    def pause(self) -> None:
        self.live.stop()

    def resume(self) -> None:
        self.live.start()

    def close(self) -> None:
        self.live.stop()


def make_progress(verbose: bool = False) -> Progress:
    if sys.stdout.isatty():
        return LiveProgress(verbose=verbose)
    return Progress(verbose=verbose)
