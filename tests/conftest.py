"""Test-wide rules: unit tests may not start processes; integration and e2e tests say they do.

With `--skips-fail` (what `make test` passes on CI) a skipped test fails: there the host has
every package and root, so a test that skips (no oar-server, no namespaces) is a test lost.
"""

import signal
import subprocess

import pytest

REAL_PROCESS_MARKERS = ("integration", "e2e", "spawns")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--skips-fail", action="store_true",
                     help="a skipped test fails: every collected test must run (CI)")


def pytest_configure(config: pytest.Config) -> None:  # noqa: ARG001
    """Give the suite a terminal's Ctrl-C even when a shell started it in the background.

    A shell without job control starts background commands with SIGINT ignored, and an ignored
    signal stays ignored across exec: the tests of what Ctrl-C does to a build or a child would
    then test nothing. A handled SIGINT is reset to the default in every child we start.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and item.config.getoption(
            "--skips-fail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, and every test must run here (--skips-fail): {reason}"


@pytest.fixture(autouse=True)
def _no_stray_processes(request, monkeypatch):
    """Fail a unit test that starts a process it did not declare (marker `spawns`)."""
    if any(request.node.get_closest_marker(m) for m in REAL_PROCESS_MARKERS):
        yield
        return

    class _Forbidden(subprocess.Popen):
        def __init__(self, args, *a, **kw):  # noqa: D401
            raise AssertionError(f"unit test started a process: {args!r} (mark it 'spawns')")

    monkeypatch.setattr(subprocess, "Popen", _Forbidden)
    yield
