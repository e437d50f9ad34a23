"""The agent's process runner: argument lists, captured output, one error type."""

import pytest

from boot.proc import CommandError, run

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
