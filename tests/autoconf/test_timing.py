"""The agent's timed steps: a slow boot says which step was slow."""

from __future__ import annotations

import pytest

from autoconf.timing import Timings


def fake_clock(*readings: float):
    values = iter(readings)
    return lambda: next(values)


def test_the_line_names_each_step_with_its_duration_in_order():
    t = Timings(clock=fake_clock(0.0, 0.2, 1.0, 3.5))
    with t.step("keyboard"):
        pass
    with t.step("register"):
        pass
    assert t.line() == "keyboard 0.2 s, register 2.5 s"


def test_steps_too_short_to_matter_are_left_out_but_a_failed_one_never_is():
    t = Timings(clock=fake_clock(0.0, 0.01, 1.0, 1.01))
    with t.step("hostname"):
        pass
    with pytest.raises(RuntimeError), t.step("oar-server"):
        raise RuntimeError("did not start")
    assert t.line() == "oar-server 0.0 s (failed)"


def test_a_boot_without_noticeable_steps_says_so_and_clearing_starts_afresh():
    t = Timings(clock=fake_clock(0.0, 0.01, 5.0, 7.0))
    with t.step("detection"):
        pass
    assert t.line() == "nothing noticeable"
    t.clear()
    with t.step("Alive"):
        pass
    assert t.line() == "Alive 2.0 s"
