"""The engine on real bash, chroot, overlay layers and namespaces (needs root)."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from builder.cli import main

pytestmark = pytest.mark.integration


def _mounted_under(path: Path) -> list[str]:
    with open("/proc/mounts") as f:
        return [ln for ln in f if str(path) in ln]


def _runs(counter: Path) -> list[str]:
    return counter.read_text().split() if counter.exists() else []


@pytest.fixture
def project(tree):
    """bootstrap (a tiny root) -> configure (files, variables, chroot) -> export (tgz)."""
    counter = tree.root / "runs"
    tree.minroot_step()
    tree.write("configure.yaml", f"""
        - files:
            - exec_current: echo configure >> {counter}
            - write_file: [/etc/motd, "$$greeting"]
            - append_file: [/etc/motd, "second line"]
            - set_var: [COLOR, "blue-$(echo sky)"]
        - in_chroot:
            - exec_chroot: echo "chroot sees $COLOR" > /etc/color; grep -q ' /proc ' /proc/mounts
        - gate:
            - exec_current: test ! -e {tree.root}/fail-gate || {{ echo "gate closed"; exit 3; }}
        """)
    tree.write("export.yaml", f"""
        - pack:
            - exec_current: echo export >> {counter}
            - exec_appliance: tar -czf $$build_dir/out.tgz ./etc
            - exec_current: echo "color=$COLOR" > $$build_dir/color.txt
        """)
    tree.recipe("- bootstrap\n- configure\n- export: {checkpoint: false}\n",
                extra_globals="greeting: hello\n")
    tree.counter = counter
    tree.work = tree.workdir_base / "r"
    return tree


def test_build_runs_macrosteps_and_carries_variables(project, capsys):
    assert main([str(project.recipes / "r.yaml")]) == 0
    out = capsys.readouterr().out
    assert "[3/3] export" in out and "total" in out
    assert (project.work / "color.txt").read_text() == "color=blue-sky\n"
    listing = subprocess.run(["tar", "-xzOf", project.work / "out.tgz", "./etc/motd",
                              "./etc/color"], capture_output=True, text=True).stdout
    assert listing == "hello\nsecond line\nchroot sees blue-sky\n"
    assert "----- configure/in_chroot" in (project.work / "build.log").read_text()
    assert not _mounted_under(project.root)


def test_failure_names_microstep_command_status_and_resume(project, capsys):
    (project.root / "fail-gate").touch()
    assert main([str(project.recipes / "r.yaml")]) == 1
    err = capsys.readouterr().err
    assert "r.yaml: configure/gate failed (exit 3)" in err
    assert "command: exec_current: test ! -e" in err and "configure.yaml:9" in err
    assert "gate closed" in err
    assert f"--workdir {project.work} --from configure/gate" in err
    assert not _mounted_under(project.root)

    # Fix the cause, resume at the failed microstep: earlier microsteps are not run again.
    (project.root / "fail-gate").unlink()
    before = _runs(project.counter)
    assert main([str(project.recipes / "r.yaml"), "--workdir", str(project.work),
                 "--from", "configure/gate"]) == 0
    assert _runs(project.counter)[len(before):] == ["export"]
    # Variables set before the failure survive the resume.
    assert (project.work / "color.txt").read_text() == "color=blue-sky\n"


def test_breakpoint_stops_before_and_from_resumes(project, capsys):
    recipe = str(project.recipes / "r.yaml")
    assert main([recipe, "--breakpoint", "configure/gate"]) == 0
    out = capsys.readouterr().out
    assert "breakpoint: stopped before configure/gate" in out
    assert "--from configure/gate" in out
    assert _runs(project.counter) == ["configure"]
    assert main([recipe, "--workdir", str(project.work), "--from", "configure/gate"]) == 0
    assert _runs(project.counter) == ["configure", "export"]


def test_to_stops_after_a_macrostep(project, capsys):
    assert main([str(project.recipes / "r.yaml"), "--to", "configure"]) == 0
    assert "stopped after configure" in capsys.readouterr().out
    assert _runs(project.counter) == ["configure"]


def test_rebuild_after_edit_restarts_at_the_edited_macrostep(project, capsys):
    recipe = str(project.recipes / "r.yaml")
    assert main([recipe]) == 0
    assert main([recipe]) == 0
    assert _runs(project.counter) == ["configure", "export", "export"]
    out = capsys.readouterr().out
    assert "[2/3] configure: restored from checkpoint" in out
    text = (project.recipes / "configure.yaml").read_text().replace("second line", "changed")
    (project.recipes / "configure.yaml").write_text(text)
    assert main([recipe]) == 0
    assert "[1/3] bootstrap: restored from checkpoint" in capsys.readouterr().out
    assert _runs(project.counter)[3:] == ["configure", "export"]
    listing = subprocess.run(["tar", "-xzOf", project.work / "out.tgz", "./etc/motd"],
                             capture_output=True, text=True).stdout
    assert listing == "hello\nchanged\n"
    assert main([recipe, "--no-checkpoint"]) == 0
    assert _runs(project.counter)[5:] == ["configure", "export"]


def test_undefined_variable_is_caught_before_anything_runs(project, capsys):
    (project.recipes / "export.yaml").write_text("- x:\n    - exec_current: echo $$nothing\n")
    assert main([str(project.recipes / "r.yaml")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"build-iso: error: {project.recipes}/export.yaml:2: undefined variable "
                   "'$$nothing'"]
    assert _runs(project.counter) == []


def _spawn_build(project, extra_step: str) -> subprocess.Popen:
    (project.recipes / "configure.yaml").write_text(extra_step)
    return subprocess.Popen(
        [sys.executable, "-m", "builder.cli", str(project.recipes / "r.yaml")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=Path(__file__).resolve().parents[2])


def _started_by(proc: subprocess.Popen, pattern: str, timeout: float = 30) -> psutil.Process:
    """The process matching `pattern` that `proc` started (not one another test left)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if " ".join(child.cmdline()) == pattern:
                        return child
        if proc.poll() is not None:
            raise AssertionError(f"build-iso ended ({proc.returncode}) before {pattern!r} ran:"
                                 f" {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.1)
    raise AssertionError(f"build-iso started no {pattern!r} within {timeout}s")


def _gone(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


HANG = """
- hang:
    - exec_chroot: sleep 4242
"""


@pytest.fixture
def hung_build(project):
    """A build stopped in configure/hang (`sleep 4242` in the chroot); whatever the test does,
    nothing of it outlives the test."""
    proc = _spawn_build(project, HANG)
    sleeper = _started_by(proc, "sleep 4242")
    try:
        yield proc, sleeper
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
        with contextlib.suppress(psutil.Error):
            sleeper.kill()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_during_exec_chroot_leaves_nothing_mounted(project, hung_build, sig):
    proc, sleeper = hung_build
    assert _mounted_under(project.root) == []   # the mounts live in the build's namespace only
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "interrupted during configure/hang" in err
    assert "--from configure/hang" in err
    assert not _mounted_under(project.root)
    assert _gone(sleeper)


def test_killed_builder_leaves_nothing_mounted_or_running(project, hung_build):
    proc, sleeper = hung_build
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while not _gone(sleeper):
        assert time.monotonic() < deadline, "the hung microstep outlived build-iso"
        time.sleep(0.1)
    assert not _mounted_under(project.root)


def test_daemon_started_in_chroot_dies_with_its_macrostep(project):
    (project.recipes / "configure.yaml").write_text(
        "- daemon:\n    - exec_chroot: (sleep 4343 &) ; echo started\n")
    assert main([str(project.recipes / "r.yaml"), "--to", "configure"]) == 0
    assert subprocess.run(["pgrep", "-f", "sleep 4343"]).returncode == 1
    assert not _mounted_under(project.root)


def test_workdir_is_locked_against_a_second_build(project, hung_build, capsys):
    assert main([str(project.recipes / "r.yaml")]) == 2
    assert "another build-iso is using" in capsys.readouterr().err


def test_resolved_variables_are_written_for_the_recipe(project):
    assert main([str(project.recipes / "r.yaml"), "--to", "bootstrap"]) == 0
    import yaml

    variables = yaml.safe_load((project.work / "variables.yaml").read_text())
    assert variables["greeting"] == "hello" and variables["distrib"] == "test"


def test_lines_a_script_leaves_for_the_user_are_printed_after_the_summary(project, capsys):
    project.write("export.yaml", """
        - pack:
            - exec_current: echo "password of this build 1234" >> $$build_dir/report.txt
        """)
    assert main([str(project.recipes / "r.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("password of this build 1234")
    assert out.index("total") < out.index("password of this build")
    assert main([str(project.recipes / "r.yaml")]) == 0
    assert capsys.readouterr().out.count("password of this build") == 1  # this build's only
