"""A clock that moves only when the code under test waits, so timeouts are tested at once."""

from __future__ import annotations

import os
import select

KEY_ARRIVAL = 5.0  # how long a key written to a pseudo-terminal may take to reach its other side


class FakeClock:
    """`clock()` reads the time; `wait_key(fd, seconds)` stands for `autoconf.prompt.key_ready`.

    Keys scheduled with `type_at` are written to the terminal when the waiting reaches their
    time; otherwise a wait moves the clock by its whole length and says no key came.
    """

    def __init__(self, start: float = 0.0) -> None:
        self.start = start
        self.now = start
        self._keys: list[tuple[float, int, bytes]] = []

    def __call__(self) -> float:
        return self.now

    @property
    def elapsed(self) -> float:
        return self.now - self.start

    def type_at(self, seconds: float, master: int, keys: str) -> None:
        """Press `keys` on the terminal whose master side is `master`, `seconds` after the start."""
        self._keys.append((self.start + seconds, master, keys.encode()))
        self._keys.sort(key=lambda key: key[0])

    def wait_key(self, fd: int, seconds: float) -> bool:
        if select.select([fd], [], [], 0)[0]:
            return True  # the rest of keys already pressed
        due = self.now + seconds
        if self._keys and self._keys[0][0] <= due:
            at, master, keys = self._keys.pop(0)
            self.now = max(self.now, at)
            os.write(master, keys)
            return bool(select.select([fd], [], [], KEY_ARRIVAL)[0])
        self.now = due
        return False


def screen(master: int, until: str = "", quiet: float = 0.2, limit: float = KEY_ARRIVAL) -> str:
    """What the terminal shows, read from its master side: up to `until` when given, else until
    nothing more arrives for `quiet` seconds (a guard of `limit` seconds ends a missing text)."""
    shown = ""
    while not until or until not in shown:
        if not select.select([master], [], [], limit if until else quiet)[0]:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk.decode(errors="replace")
    return shown
