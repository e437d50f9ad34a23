"""The one owner of processes: short commands with captured output, long-running ones in a block."""

import os
import signal
import subprocess
import sys
import time

import pytest

from boot.proc import CommandError, pid_alive, run, spawn, stop, stop_pids

pytestmark = pytest.mark.spawns


def test_run_returns_captured_stdout():
    result = run(["printf", "%s-%s", "a b", "c"])
    assert result.stdout == "a b-c"
    assert result.returncode == 0


def test_arguments_are_not_interpreted_by_a_shell():
    result = run(["echo", "$(id)", ";", "rm", "-rf", "/"])
    assert result.stdout == "$(id) ; rm -rf /\n"


def test_failure_raises_with_argv_status_and_stderr():
    with pytest.raises(CommandError) as err:
        run(["sh", "-c", "echo first >&2; echo 'no such host' >&2; exit 4"])
    assert err.value.returncode == 4
    assert err.value.argv[0] == "sh"
    assert "no such host" in err.value.stderr
    assert "exit status 4" in str(err.value) and str(err.value).endswith("no such host")


def test_check_false_returns_the_status():
    assert run(["sh", "-c", "exit 3"], check=False).returncode == 3


def test_missing_program_is_status_127_with_advice():
    with pytest.raises(CommandError) as err:
        run(["oar-live-no-such-program", "x"])
    assert err.value.returncode == 127
    assert "command not found" in str(err.value)


def test_input_and_env_reach_the_command():
    result = run(["sh", "-c", 'cat; echo "$OAR_LIVE_T"'], input="hello\n", env={"OAR_LIVE_T": "v"})
    assert result.stdout == "hello\nv\n"


def test_timeout_kills_and_raises():
    with pytest.raises(CommandError) as err:
        run(["sleep", "5"], timeout=0.2)
    assert "timed out" in str(err.value)


# ---- spawn: a long-running process owned by a block ----------------------------------------

IGNORES_TERM = ["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.1; done"]


def _reaped(pid: int) -> bool:
    """Not our child any more: neither running nor a zombie waiting for us."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


def test_a_block_that_ends_normally_stops_and_reaps_the_process():
    with spawn(["sleep", "30"]) as process:
        assert process.poll() is None
    assert process.returncode == -signal.SIGTERM
    assert _reaped(process.pid)


def test_a_process_that_ended_by_itself_keeps_its_status():
    with spawn(["sh", "-c", "exit 3"]) as process:
        assert process.wait() == 3
    assert process.returncode == 3


def test_a_block_that_raises_still_stops_and_reaps():
    with pytest.raises(RuntimeError), spawn(["sleep", "30"]) as process:
        raise RuntimeError("the caller failed")
    assert process.returncode == -signal.SIGTERM
    assert _reaped(process.pid)


def test_ctrl_c_in_the_block_stops_the_process_and_goes_on():
    with pytest.raises(KeyboardInterrupt), spawn(["sleep", "30"]) as process:
        raise KeyboardInterrupt
    assert process.returncode == -signal.SIGTERM
    assert _reaped(process.pid)


def test_a_process_that_ignores_sigterm_is_killed_at_the_deadline():
    with spawn(IGNORES_TERM, stdout=subprocess.PIPE, grace=0.5) as process:
        assert process.stdout.readline() == b"ready\n"  # its trap is set
    assert process.returncode == -signal.SIGKILL
    assert _reaped(process.pid)


def test_the_given_signal_is_sent_instead_of_sigterm():
    with spawn(["sleep", "30"], stop_signal=signal.SIGINT) as process:
        pass
    assert process.returncode == -signal.SIGINT


def test_a_new_session_is_stopped_as_a_whole_group():
    # The shell waits for its child; both must go, not the shell alone.
    script = "sleep 30 & echo $!; wait"
    with spawn(["sh", "-c", script], stdout=subprocess.PIPE, new_session=True) as process:
        grandchild = int(process.stdout.readline())
        assert os.getpgid(grandchild) == process.pid != os.getpgid(0)
    assert process.returncode == -signal.SIGTERM
    _wait_until_gone(grandchild)


def test_without_a_new_session_the_process_shares_our_group():
    with spawn(["sleep", "30"]) as process:
        assert os.getpgid(process.pid) == os.getpgid(0)


def test_stopping_early_then_leaving_the_block_stops_once():
    with spawn(IGNORES_TERM, stdout=subprocess.PIPE, grace=0.2) as process:
        process.stdout.readline()
        assert stop(process, grace=0.2) == -signal.SIGKILL
    assert process.returncode == -signal.SIGKILL


def test_environment_is_added_to_ours_or_given_whole():
    code = "import os; print(os.environ.get('OAR_LIVE_T'), 'PATH' in os.environ)"
    with spawn([sys.executable, "-c", code], stdout=subprocess.PIPE,
               env={"OAR_LIVE_T": "v"}) as process:
        assert process.stdout.read() == b"v True\n"
    with spawn([sys.executable, "-c", code], stdout=subprocess.PIPE, env={"OAR_LIVE_T": "w"},
               inherit_env=False) as process:
        assert process.stdout.read() == b"w False\n"


def test_cwd_stdin_and_passed_descriptors_reach_the_process(tmp_path):
    read_end, write_end = os.pipe()
    try:
        code = f"import os, sys; print(os.getcwd(), sys.stdin.read()); os.write({write_end}, b'ok')"
        argv = [sys.executable, "-c", code]
        with spawn(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=tmp_path,
                   pass_fds=[write_end]) as process:
            out, _ = process.communicate(b"typed\n")
        assert out.decode() == f"{tmp_path} typed\n\n"
        assert os.read(read_end, 100) == b"ok"
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_process_started_to_die_with_us_dies_with_its_parent():
    # The middle process starts a grandchild that dies with it; killing the middle one kills it.
    code = ("import sys; from boot.proc import spawn\n"
            "with spawn(['sleep', '30'], die_with_parent=True) as p:\n"
            "    print(p.pid, flush=True); sys.stdin.read()\n")
    with spawn([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
               stop_signal=signal.SIGKILL) as middle:
        grandchild = int(middle.stdout.readline())
        assert pid_alive(grandchild)
    _wait_until_gone(grandchild)


def test_a_missing_program_is_status_127():
    with pytest.raises(CommandError) as err, spawn(["oar-live-no-such-program"]):
        pass
    assert err.value.returncode == 127


# ---- stop_pids: processes an earlier program started ---------------------------------------


def _orphan(script: str) -> int:
    """A process that is not our child (its parent exited): its pid."""
    out = run(["sh", "-c", f"({script}) >/dev/null 2>&1 & echo $!"]).stdout
    return int(out)


def _wait_until_gone(pid: int) -> None:
    # Its new parent reaps it at its own pace; SIGKILL was sent, so this ends.
    while pid_alive(pid):
        time.sleep(0.05)


def test_stop_pids_terminates_then_kills_what_ignores_sigterm():
    polite = _orphan("exec sleep 30")
    stubborn = _orphan("trap '' TERM; exec sleep 30")
    assert pid_alive(polite) and pid_alive(stubborn)
    stop_pids([polite, stubborn], grace=0.5)
    _wait_until_gone(polite)
    _wait_until_gone(stubborn)


def test_stop_pids_leaves_alone_a_pid_that_is_no_longer_the_one_meant():
    other = _orphan("exec sleep 30")
    try:
        stop_pids([other], alive=lambda pid: False, grace=0.1)
        assert pid_alive(other)
    finally:
        stop_pids([other], grace=0.1)


def test_pid_alive_reads_a_zombie_as_ended():
    process = subprocess.Popen(["sh", "-c", "exit 0"])
    os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)  # ended, not yet reaped
    assert not pid_alive(process.pid)
    process.wait()
    assert not pid_alive(process.pid)
    assert pid_alive(os.getpid())
