"""Test-wide rules: unit tests may not start processes; integration and e2e tests say they do."""

import subprocess

import pytest

REAL_PROCESS_MARKERS = ("integration", "e2e", "spawns")


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
