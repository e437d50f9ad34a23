"""On a terminal, a failure offers retry, a shell in the appliance, continue, or abort."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


class Terminal:
    """build-iso on a pseudo-terminal, read until a pattern shows up."""

    def __init__(self, argv: list[str]):
        self.master, slave = pty.openpty()
        env = {k: v for k, v in os.environ.items() if k != "CI"}
        env["TERM"] = "dumb"
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=ROOT,
                                     env=env, start_new_session=True)
        os.close(slave)
        self.text = ""

    def expect(self, pattern: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while pattern not in self.text:
            left = deadline - time.monotonic()
            assert left > 0, f"{pattern!r} not seen; screen was:\n{self.text[-2000:]}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                try:
                    self.text += os.read(self.master, 4096).decode(errors="replace")
                except OSError:
                    break
        assert pattern in self.text, self.text[-2000:]

    def send(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())

    def close(self) -> int:
        try:
            return self.proc.wait(timeout=60)
        finally:
            os.close(self.master)


def test_shell_then_continue_after_a_failure(tree):
    tree.minroot_step()
    tree.write("work.yaml", f"""
        - breaks:
            - exec_chroot: echo broken > /etc/state; exit 5
        - after:
            - exec_current: echo after-ran > {tree.root}/after
        """)
    recipe = tree.recipe("- bootstrap\n- work\n")
    term = Terminal([sys.executable, "-m", "builder.cli", str(recipe)])
    term.expect("work/breaks failed (exit 5)")
    term.expect("[r]etry, [s]hell in the appliance, [c]ontinue, [a]bort?")
    term.send("s")
    term.expect("shell in the appliance")
    term.send("cat /etc/state; exit")
    term.expect("broken")
    term.expect("[a]bort?")
    term.send("c")
    assert term.close() == 0
    assert (tree.root / "after").read_text() == "after-ran\n"
    with open("/proc/mounts") as f:
        assert str(tree.root) not in f.read()
