"""Where the agent's boot time goes: named, timed steps, summed up on the console at the end.

    with timing.step("register"):
        ...

Each step's duration is recorded in `timing.BOOT`, the record of this boot; the agent's summary
prints it as its `steps` row (`keyboard 0.1 s, detection 0.2 s, register 2.3 s, ...`) so a slow
boot says which step was slow. A step that raises is recorded too, marked as failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

from boot import console

SHOWN_FROM = 0.05  # shorter steps are left out of the line: they are noise under a second


@dataclass
class Timings:
    """Steps in the order they ended, with their durations in seconds."""

    clock: Callable[[], float] = time.monotonic
    steps: list[tuple[str, float, bool]] = field(default_factory=list)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = self.clock()
        ok = False
        try:
            yield
            ok = True
        finally:
            self.steps.append((name, self.clock() - started, ok))

    def line(self) -> str:
        """`keyboard 0.1 s, register 2.3 s (failed)`: the steps that took noticeable time."""
        return console.steps_line(console.Step(name, seconds, ok)
                                  for name, seconds, ok in self.steps
                                  if seconds >= SHOWN_FROM or not ok)

    def clear(self) -> None:
        self.steps.clear()


BOOT = Timings()  # the steps of this boot, for the agent's summary


def step(name: str) -> AbstractContextManager[None]:
    """A step of this boot (see `Timings.step`)."""
    return BOOT.step(name)
