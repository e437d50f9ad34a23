"""The test-wide rules of tests/conftest.py, run on a small suite of their own."""

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")
SETUP_CFG = Path(__file__).parents[1] / "setup.cfg"

SUITE = """\
import pytest

def test_runs():
    pass

@pytest.mark.skipif(True, reason="oar-server is not installed")
def test_needs_oar():
    pass

def test_needs_root():
    pytest.skip("network namespaces need root")

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_known_bug():
    assert False
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST.read_text())
    pytester.makepyfile(test_suite=SUITE)
    return pytester


def test_skips_are_reported_as_skips_by_default(suite):
    suite.runpytest().assert_outcomes(passed=1, skipped=2, xfailed=1)


def test_with_skips_fail_every_skip_fails_and_says_why(suite):
    result = suite.runpytest("--skips-fail")
    outcomes = result.parseoutcomes()
    assert (outcomes["passed"], outcomes["xfailed"]) == (1, 1)
    assert outcomes.get("failed", 0) + outcomes.get("errors", 0) == 2
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*every test must run here*oar-server is not installed*",
                                 "*every test must run here*network namespaces need root*"])


def test_a_misspelt_marker_is_an_error_not_a_test_that_silently_runs_elsewhere(pytester):
    pytester.makefile(".cfg", setup=SETUP_CFG.read_text())  # the project's pytest settings
    pytester.makepyfile(test_typo="import pytest\n\n@pytest.mark.intgration\ndef test_x():\n"
                                  "    pass\n")
    result = pytester.runpytest("test_typo.py")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*'intgration' not found in `markers` configuration option*"])
