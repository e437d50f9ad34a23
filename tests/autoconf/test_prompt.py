"""Timed console prompts, driven through a real pseudo-terminal."""

import contextlib
import os
import pty
import select
import termios
import threading
import time

import pytest

from autoconf.prompt import Answer, How, ask
from tests.autoconf.fakeclock import FakeClock, screen

pytestmark = pytest.mark.spawns  # a real pty (no process, except the pty.fork test)


class Console:
    """A pseudo-terminal: the agent gets the slave side, the test types on the master side."""

    def __init__(self):
        self.master, self.slave = pty.openpty()
        self.screen = ""
        self.result: Answer | None = None
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None

    def start(self, *args, **kw):
        def target():
            try:
                self.result = ask(*args, fd=self.slave, out_fd=self.slave, **kw)
            except BaseException as exc:  # noqa: BLE001 - reported by finish()
                self.error = exc

        self.thread = threading.Thread(target=target, daemon=True)
        self.thread.start()

    def read_until(self, text, limit=5.0):
        end = time.monotonic() + limit
        while text not in self.screen:
            left = end - time.monotonic()
            assert left > 0, f"{text!r} never appeared; screen: {self.screen!r}"
            ready, _, _ = select.select([self.master], [], [], left)
            if ready:
                self.screen += os.read(self.master, 4096).decode(errors="replace")
        return self.screen

    def type(self, keys):
        os.write(self.master, keys.encode())

    def finish(self, limit=5.0) -> Answer:
        self.thread.join(limit)
        assert not self.thread.is_alive(), f"the prompt never returned; screen: {self.screen!r}"
        if self.error:
            raise self.error
        return self.result

    def close(self):
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def console():
    c = Console()
    yield c
    c.close()


def test_typed_answer_is_taken(console):
    before = termios.tcgetattr(console.slave)
    console.start("Keyboard layout", "us", choices=["us", "fr", "de"], timeout=30)
    console.read_until("Keyboard layout [us] (us, fr, de) 30s: ")
    console.type("fr\r")
    assert console.finish() == Answer("fr", How.TYPED)
    assert termios.tcgetattr(console.slave) == before  # echo and line mode are back


def test_enter_takes_the_default(console):
    console.start("Role", "auto", choices=["server", "node", "solo", "auto"], timeout=30)
    console.read_until("30s: ")
    console.type("\r")
    assert console.finish() == Answer("auto", How.ENTER)
    assert "Role [auto] (server, node, solo, auto): auto" in console.read_until(": auto")


def test_timeout_takes_the_default_and_counts_down_in_place(console):
    clock = FakeClock()
    answer = ask("Role", "solo", choices=["server", "node", "solo"], timeout=2, fd=console.slave,
                 out_fd=console.slave, clock=clock, wait=clock.wait_key)
    assert answer == Answer("solo", How.TIMEOUT)
    assert clock.elapsed == 2  # it waited the whole countdown, and no longer
    shown = screen(console.master, until="solo\x1b[K")
    countdown = shown[: shown.index("1s: ")]
    assert "2s: " in countdown and "\n" not in countdown  # redrawn with \r, not new lines
    assert "0s: " not in shown
    assert termios.tcgetattr(console.slave)[3] & termios.ECHO


def test_bad_input_asks_again_then_accepts_good_input(console):
    console.start("Role", "auto", choices=["server", "node", "solo", "auto"], timeout=30)
    console.read_until("30s: ")
    console.type("captain\r")
    console.read_until("'captain' is not one of: server, node, solo, auto")
    console.type("node\r")
    assert console.finish() == Answer("node", How.TYPED)


def test_backspace_and_arrow_keys_edit_the_answer(console):
    console.start("Keyboard layout", "us", validate=lambda a: None, timeout=30)
    console.read_until("30s: ")
    console.type("dx\x7fe\x1b[A\x1b[D\r")  # d, x, backspace, e, arrow up, arrow left, Enter
    assert console.finish() == Answer("de", How.TYPED)


def test_custom_validator_reason_is_shown(console):
    console.start("Keyboard layout", "us", validate=lambda a: None if a == "fr" else
                  f"no keymap named {a}", hint="us, fr, ...", timeout=30)
    console.read_until("(us, fr, ...) 30s: ")
    console.type("zz\r")
    console.read_until("no keymap named zz")
    console.type("fr\r")
    assert console.finish().value == "fr"


def test_ctrl_c_takes_the_default_and_restores_the_terminal(console):
    before = termios.tcgetattr(console.slave)
    console.start("Role", "auto", timeout=30)
    console.read_until("30s: ")
    console.type("no\x03")
    assert console.finish() == Answer("auto", How.ENTER)
    assert termios.tcgetattr(console.slave) == before


def test_typing_restarts_the_countdown(console):
    clock = FakeClock()
    clock.type_at(1.2, console.master, "s")
    clock.type_at(2.4, console.master, "olo\r")  # past the first deadline
    answer = ask("Role", "auto", timeout=2, fd=console.slave, out_fd=console.slave, clock=clock,
                 wait=clock.wait_key)
    assert answer == Answer("solo", How.TYPED)
    assert clock.elapsed == 2.4


def test_keys_pressed_before_the_question_are_not_an_answer(console):
    console.type("server\r")  # typed during the boot, before the prompt appeared
    assert select.select([console.slave], [], [], 5)[0], "the keys never reached the terminal"
    clock = FakeClock()
    answer = ask("Role", "auto", timeout=1, fd=console.slave, out_fd=console.slave, clock=clock,
                 wait=clock.wait_key)
    assert answer == Answer("auto", How.TIMEOUT)


def test_no_terminal_means_no_wait():
    def never(fd, seconds):
        raise AssertionError(f"waited {seconds} s for a key without a terminal")

    read_end, write_end = os.pipe()
    try:
        clock = FakeClock()
        answer = ask("Role", "auto", timeout=30, fd=read_end, clock=clock, wait=never)
        assert answer == Answer("auto", How.NO_TERMINAL)
        assert clock.elapsed == 0
    finally:
        os.close(read_end)
        os.close(write_end)


def test_timeout_zero_never_asks(console):
    assert ask("Role", "node", timeout=0, fd=console.slave) == Answer("node", How.NOT_ASKED)
    ready, _, _ = select.select([console.master], [], [], 0.1)
    assert not ready  # nothing was printed


def test_on_a_controlling_terminal_in_another_process():
    """The boot case: the agent's stdin is the console (a pty here), answers bad then good."""
    pid, master = pty.fork()
    if pid == 0:  # child: stdin/stdout are the pty
        try:
            answer = ask("Role", "auto", choices=["server", "node", "solo", "auto"], timeout=20,
                         fd=0)  # pytest replaced sys.stdin; the agent's fd 0 is the console
            os._exit({"server": 10, "node": 11}.get(answer.value, 1))
        finally:
            os._exit(2)
    screen = ""
    try:
        for wanted, keys in (("20s: ", "nod\r"), ("is not one of", "server\r")):
            end = time.monotonic() + 5
            while wanted not in screen and time.monotonic() < end:
                if select.select([master], [], [], 0.2)[0]:
                    screen += os.read(master, 4096).decode(errors="replace")
            assert wanted in screen, screen
            os.write(master, keys.encode())
        end = time.monotonic() + 5
        while time.monotonic() < end:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if select.select([master], [], [], 0.1)[0]:
                with contextlib.suppress(OSError):
                    os.read(master, 4096)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the prompt did not return")
        assert os.waitstatus_to_exitcode(status) == 10
    finally:
        os.close(master)
