"""Adding a node's resources in one OAR::IO transaction: the command, refused input, the ids."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from autoconf import oaradd
from autoconf.resources import Resource


def resources(host: str = "node-aaaaaaaaaaaa", n: int = 3) -> list[Resource]:
    return [Resource(host, 1, 1 + i, 1 + i, str(i), 5) for i in range(n)]


def test_one_perl_process_as_oar_adds_every_resource_of_the_node():
    argv = oaradd.add_argv("node-aaaaaaaaaaaa", resources(), "Absent")
    assert argv[:6] == ["runuser", "-u", "oar", "--", "perl", "-e"]
    assert argv[6] == oaradd.ADD_SCRIPT
    assert argv[7:] == ["node-aaaaaaaaaaaa", "Absent",
                        "host=node-aaaaaaaaaaaa;cpu=1;core=1;thread=1;cpuset=0;mem=5",
                        "host=node-aaaaaaaaaaaa;cpu=1;core=2;thread=2;cpuset=1;mem=5",
                        "host=node-aaaaaaaaaaaa;cpu=1;core=3;thread=3;cpuset=2;mem=5"]


def test_an_oar_26_core_has_no_thread_and_lists_its_hyperthreads():
    core = Resource("node-aaaaaaaaaaaa", 1, 1, None, "0,4", 5)
    assert oaradd.add_argv("node-aaaaaaaaaaaa", [core])[9:] == [
        "host=node-aaaaaaaaaaaa;cpu=1;core=1;cpuset=0,4;mem=5"]


@pytest.mark.parametrize("host, state, rows", [
    ("node-aaaa'; DROP TABLE resources; --", "Absent", None),
    ("node-aaaaaaaaaaaa", "Suspected", None),  # a node enters Absent (or Alive), nothing else
    ("node-aaaaaaaaaaaa", "Absent", resources("node-bbbbbbbbbbbb")),  # another host's
    ("node-aaaaaaaaaaaa", "Absent", [Resource("node-aaaaaaaaaaaa", 1, 1, 1, "0;x=1", 5)]),
    ("node-aaaaaaaaaaaa", "Absent", [Resource("node-aaaaaaaaaaaa", 1, 1, 1, "0,", 5)]),
])  # fmt: skip
def test_anything_but_a_host_name_and_numbers_is_refused(host, state, rows):
    with pytest.raises(ValueError):
        oaradd.add_argv(host, rows if rows is not None else resources(), state)


def test_the_ids_printed_must_be_one_per_resource():
    assert oaradd.parse_ids("7\n8\n9\n", 3) == [7, 8, 9]
    with pytest.raises(ValueError, match="OAR added 2 resources, not 3"):
        oaradd.parse_ids("7\n8\n", 3)


@pytest.mark.spawns
@pytest.mark.skipif(not Path("/usr/share/perl5/OAR/IO.pm").exists() or shutil.which("perl") is None,
                    reason="liboar-perl is not installed")
def test_the_script_compiles_against_oars_library():
    """perl -c: the script and the OAR::IO and OAR::Conf it uses (running it is the
    integration tests' and the benchmark's)."""
    result = subprocess.run(["perl", "-c", "-e", oaradd.ADD_SCRIPT], capture_output=True,
                            text=True)
    assert result.returncode == 0 and "syntax OK" in result.stderr, result.stderr
