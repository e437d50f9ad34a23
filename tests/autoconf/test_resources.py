"""OAR resources of a machine, numbered as OAR's oar_resources_init numbers them."""

import os
import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from autoconf.detect import Cpu, detect
from autoconf.resources import (
    Granularity,
    Resource,
    cpuset_cpus,
    image_granularity,
    oar_mem_gib,
    plan_resources,
)
from tests.autoconf import fakeroot
from tests.autoconf.fakeroot import build_root

OAR_RESOURCES_INIT = Path("/usr/lib/oar/oar_resources_init")


def triples(plan):
    """(cpu, core, cpuset) of OAR 2.5 resources, whose cpuset is one CPU number."""
    return [(r.cpu, r.core, int(r.cpuset)) for r in plan]


def cpusets(plan):
    return [int(r.cpuset) for r in plan]


def plan_for(tmp_path, machine, **bases):
    return plan_resources(detect(build_root(tmp_path, machine)), "node-1", **bases)


def test_two_by_two_on_an_empty_database_matches_the_notes(tmp_path):
    # OAR-NOTES.md: cpu=1 core=1 cpuset=0, cpu=1 core=2 cpuset=1, cpu=2 core=3 cpuset=2, ...
    assert triples(plan_for(tmp_path, fakeroot.two_sockets_two_cores())) == [
        (1, 1, 0), (1, 2, 1), (2, 3, 2), (2, 4, 3)]


def test_ids_continue_from_the_database_maximum(tmp_path):
    plan = plan_for(tmp_path, fakeroot.two_sockets_two_cores(), cpu_base=6, core_base=20,
                    thread_base=40)
    assert triples(plan) == [(7, 21, 0), (7, 22, 1), (8, 23, 2), (8, 24, 3)]
    assert [r.thread for r in plan] == [41, 42, 43, 44]


def test_one_core(tmp_path):
    plan = plan_for(tmp_path, fakeroot.one_socket_one_core())
    assert plan == [Resource(host="node-1", cpu=1, core=1, thread=1, cpuset="0", mem=2)]


def test_hyperthreads_each_get_a_core_id_sorted_by_socket_then_cpu(tmp_path):
    plan = plan_for(tmp_path, fakeroot.two_sockets_four_cores_ht())
    assert cpusets(plan) == [0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15]
    assert [r.cpu for r in plan] == [1] * 8 + [2] * 8
    assert [r.core for r in plan] == list(range(1, 17))
    assert {r.mem for r in plan} == {65_747_968 // 1024 // 1024 + 1}


def test_interleaved_cpus_group_by_socket(tmp_path):
    plan = plan_for(tmp_path, fakeroot.interleaved_sockets())
    assert triples(plan) == [(1, 1, 0), (1, 2, 2), (1, 3, 4), (1, 4, 6),
                             (2, 5, 1), (2, 6, 3), (2, 7, 5), (2, 8, 7)]


def test_offline_cpu_gets_no_resource(tmp_path):
    assert cpusets(plan_for(tmp_path, fakeroot.one_cpu_offline())) == [0, 1, 3]


def test_without_physical_id_each_processor_is_its_own_cpu(tmp_path):
    d = detect(build_root(tmp_path, fakeroot.two_sockets_two_cores()))
    d = replace(d, cpus=tuple(replace(c, socket=-1) for c in d.cpus))
    assert triples(plan_resources(d, "n")) == [(1, 1, 0), (2, 2, 1), (3, 3, 2), (4, 4, 3)]


def test_mem_is_oars_integer_formula():
    assert oar_mem_gib(4 * 1024 - 1) == 4  # just under 4 GiB
    assert oar_mem_gib(4 * 1024) == 5  # exactly 4 GiB: OAR's "+1" still adds one
    assert oar_mem_gib(24_684_096 // 1024) == 24


def test_oarnodesetting_argv_is_an_argument_list():
    r = Resource(host="node-aabbccddeeff", cpu=2, core=3, thread=3, cpuset="2", mem=16)
    assert r.oarnodesetting_argv() == [
        "oarnodesetting", "-a", "-h", "node-aabbccddeeff", "-p", "host=node-aabbccddeeff",
        "-p", "cpu=2", "-p", "core=3", "-p", "thread=3", "-p", "cpuset=2", "-p", "mem=16"]
    assert r.to_json() == {"host": "node-aabbccddeeff", "cpu": 2, "core": 3, "thread": 3,
                           "cpuset": "2", "mem": 16}


def test_single_cpu_record_is_planned_once():
    from autoconf.detect import Detection
    d = Detection("node-000000000001", None, None, (Cpu(5, 0, 0, 0),), 1000, (), None)
    assert triples(plan_resources(d, "h", cpu_base=1, core_base=1)) == [(2, 2, 5)]


# ---- against the real oar_resources_init -------------------------------------------------------


def run_oar_resources_init(tmp_path: Path, root: Path, host: str, cpu_base: int = 0,
                           core_base: int = 0) -> list[tuple[int, int, int, int]]:
    """Run Debian's script with ssh replaced by `cat root/...`; its (cpu, core, cpuset, mem)."""
    work = tmp_path / "ori"
    work.mkdir()
    ssh = work / "ssh"  # called as: ssh HOST cat /proc/cpuinfo
    ssh.write_text('#!/bin/sh\nshift\nexec cat "$FAKE_ROOT$2"\n')
    setting = work / "oarnodesetting"  # answers --last-property-value cpu|core
    setting.write_text('#!/bin/sh\n[ "$1" = --last-property-value ] && eval echo \\${BASE_$2}\n')
    for script in (ssh, setting):
        script.chmod(0o755)
    (work / "oar.conf").write_text("")
    out = work / "resources.sh"
    env = {**os.environ, "FAKE_ROOT": "" if root == Path("/") else str(root),
           "BASE_cpu": str(cpu_base), "BASE_core": str(core_base)}
    subprocess.run([str(OAR_RESOURCES_INIT), "-y", "-c", str(work / "oar.conf"), "-e", str(ssh),
                    "-n", str(setting), "-o", str(out), "-"], input=host + "\n", text=True,
                   env=env, check=True, capture_output=True)
    lines = [line for line in out.read_text().splitlines() if f" -a -h {host} " in line]
    rows = []
    for line in lines:
        props = dict(re.findall(r"-p (\w+)=(\S+)", line))
        rows.append((int(props["cpu"]), int(props["core"]), int(props["cpuset"]),
                     int(props["mem"])))
    return rows


needs_oar = pytest.mark.skipif(not OAR_RESOURCES_INIT.exists() or not shutil.which("perl"),
                               reason="Debian's oar-server (oar_resources_init) is not installed")


@pytest.mark.integration
@needs_oar
@pytest.mark.parametrize("layout", sorted(fakeroot.LAYOUTS))
@pytest.mark.parametrize("bases", [(0, 0), (3, 17)])
def test_same_numbering_as_oar_resources_init(tmp_path, layout, bases):
    root = build_root(tmp_path / "root", fakeroot.LAYOUTS[layout]())
    expected = run_oar_resources_init(tmp_path, root, "node-x", *bases)
    plan = plan_resources(detect(root), "node-x", cpu_base=bases[0], core_base=bases[1])
    assert [(r.cpu, r.core, int(r.cpuset), r.mem) for r in plan] == expected
    assert expected  # the script did emit resources


@pytest.mark.integration
@needs_oar
def test_same_numbering_as_oar_resources_init_on_this_machine(tmp_path):
    expected = run_oar_resources_init(tmp_path, Path("/"), "node-here")
    plan = plan_resources(detect(Path("/")), "node-here")
    assert [(r.cpu, r.core, int(r.cpuset), r.mem) for r in plan] == expected


# ---- OAR 2.6: a resource per physical core ------------------------------------------------------


def core_plan(tmp_path, machine, **bases):
    return plan_resources(detect(build_root(tmp_path, machine)), "node-1",
                          granularity=Granularity.CORE, **bases)


def test_oar_26_makes_one_resource_per_core_with_siblings_n_and_n_plus_4(tmp_path):
    plan = core_plan(tmp_path, fakeroot.one_socket_four_cores_ht())
    assert [(r.cpu, r.core, r.cpuset) for r in plan] == [
        (1, 1, "0,4"), (1, 2, "1,5"), (1, 3, "2,6"), (1, 4, "3,7")]
    assert {r.thread for r in plan} == {None} and {r.mem for r in plan} == {16}


def test_oar_26_adjacent_siblings(tmp_path):
    plan = core_plan(tmp_path, fakeroot.adjacent_siblings(), cpu_base=2, core_base=10)
    assert [(r.cpu, r.core, r.cpuset) for r in plan] == [
        (3, 11, "0,1"), (3, 12, "2,3"), (3, 13, "4,5"), (3, 14, "6,7")]


def test_oar_26_two_sockets_with_core_id_gaps(tmp_path):
    plan = core_plan(tmp_path, fakeroot.two_sockets_four_cores_ht())
    assert [(r.cpu, r.cpuset) for r in plan] == [
        (1, "0,8"), (1, "1,9"), (1, "2,10"), (1, "3,11"),
        (2, "4,12"), (2, "5,13"), (2, "6,14"), (2, "7,15")]
    assert [r.core for r in plan] == list(range(1, 9))


def test_oar_26_a_core_without_hyperthreads_is_its_own_resource(tmp_path):
    plan = core_plan(tmp_path, fakeroot.one_cpu_offline())
    assert [(r.cpu, r.core, r.cpuset) for r in plan] == [(1, 1, "0"), (1, 2, "1"), (1, 3, "3")]


def test_oar_26_sets_no_thread_property():
    r = Resource(host="node-1", cpu=1, core=2, thread=None, cpuset="1,5", mem=16)
    assert r.oarnodesetting_argv() == [
        "oarnodesetting", "-a", "-h", "node-1", "-p", "host=node-1", "-p", "cpu=1",
        "-p", "core=2", "-p", "cpuset=1,5", "-p", "mem=16"]


def test_the_images_oar_version_decides_the_granularity(tmp_path):
    assert image_granularity(tmp_path) is Granularity.CPU  # no file: an OAR 2.5 image
    path = tmp_path / "etc/oar-live/oar-version"
    path.parent.mkdir(parents=True)
    for text, expected in (("2.6\n", Granularity.CORE), ("2.5", Granularity.CPU)):
        path.write_text(text)
        assert image_granularity(tmp_path) is expected
    path.write_text("2.7\n")
    with pytest.raises(ValueError, match=r"oar-version: unknown OAR version '2.7'"):
        image_granularity(tmp_path)


@pytest.mark.parametrize("text, cpus", [("3", (3,)), ("0,4", (0, 4)), ("4+0", (0, 4)),
                                        ("1 9", (1, 9)), (" 2 , 10 ", (2, 10))])
def test_cpuset_values_as_oar_accepts_them(text, cpus):
    assert cpuset_cpus(text) == cpus


@pytest.mark.parametrize("text", ["", "a", "0-3", "1,,2", "-1", "1" * 5000])
def test_cpuset_values_oar_live_did_not_write_are_refused(text):
    with pytest.raises(ValueError, match="not a cpuset"):
        cpuset_cpus(text)


# ---- against 2.6.1's real oar_resources_init and hwloc ------------------------------------------

TRIXIE_RECIPE = Path(__file__).parents[2] / "recipes/debian-trixie-x86_64-oar-2.6-iso.yaml"
SMT_LAYOUTS = ("2x4-ht", "1x4-ht", "1x4-ht-adjacent")


def oar_26_resources_init(tmp_path: Path) -> Path | None:
    """2.6.1's script, taken from the oar-server deb a trixie build left in its apt cache."""
    cache = Path(yaml.safe_load(TRIXIE_RECIPE.read_text())["global"]["apt_cache"])
    debs = sorted(cache.glob("oar-server_2.6.*_amd64.deb"))
    if not debs:
        return None
    script = tmp_path / "oar_resources_init"
    tar = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(debs[-1])], check=True,
                         capture_output=True).stdout
    body = subprocess.run(["tar", "-xO", "./usr/lib/oar/oar_resources_init"], input=tar,
                          check=True, capture_output=True).stdout
    script.write_bytes(body)
    script.chmod(0o755)
    return script


def run_oar_26_resources_init(tmp_path: Path, script: Path, root: Path, host: str,
                              threads: bool, cpu_base: int, core_base: int) -> list[tuple]:
    """(cpu, core, cpuset) of the resources the script makes, hwloc-ls reading `root`."""
    work = tmp_path / ("t" if threads else "c")
    work.mkdir()
    ssh = work / "ssh"  # called as: ssh HOST hwloc-ls -p --no-io --no-caches
    ssh.write_text('#!/bin/sh\nshift\nshift\nexec hwloc-ls --input "$FAKE_ROOT" "$@"\n')
    setting = work / "oarnodesetting"  # answers --last-property-value cpu|core|thread
    setting.write_text('#!/bin/sh\n[ "$1" = --last-property-value ] && eval echo \\${BASE_$2}\n')
    for tool in (ssh, setting):
        tool.chmod(0o755)
    (work / "oar.conf").write_text("")
    out = work / "resources.sh"
    env = {**os.environ, "FAKE_ROOT": str(root), "BASE_cpu": str(cpu_base),
           "BASE_core": str(core_base), "BASE_thread": "0"}
    argv = [str(script), "-y", "-c", str(work / "oar.conf"), "-e", str(ssh), "-s", str(setting),
            "-p", "true", "-o", str(out), *(["-t"] if threads else []), "-"]
    subprocess.run(argv, input=host + "\n", text=True, env=env, check=True, capture_output=True)
    rows = []
    for line in out.read_text().splitlines():
        if f" -a -h {host} " in line:
            props = dict(re.findall(r"-p (\w+)=(\S+)", line))
            rows.append((int(props["cpu"]), int(props["core"]), props["cpuset"]))
    return rows


@pytest.fixture
def oar_26_script(tmp_path):
    script = oar_26_resources_init(tmp_path)
    if script is None or not shutil.which("hwloc-ls"):
        pytest.skip("needs 2.6.1's oar-server deb in the trixie recipe's apt cache (a trixie "
                    "build puts it there) and hwloc-ls (tests/host.txt)")
    return script


@pytest.mark.integration
@pytest.mark.parametrize("layout", sorted(fakeroot.LAYOUTS))
@pytest.mark.parametrize("bases", [(0, 0), (3, 17)])
def test_same_cores_and_cpusets_as_oar_26_resources_init(tmp_path, oar_26_script, layout,
                                                         bases):
    """On a machine with hyperthreads, 2.6.1's default mode; without, its -t mode (a core is
    one PU: its default mode would put every such core of a package in one resource)."""
    root = build_root(tmp_path / "root", fakeroot.LAYOUTS[layout]())
    smt = layout in SMT_LAYOUTS
    expected = run_oar_26_resources_init(tmp_path, oar_26_script, root, "node-x",
                                         threads=not smt, cpu_base=bases[0], core_base=bases[1])
    plan = plan_resources(detect(root), "node-x", cpu_base=bases[0], core_base=bases[1],
                          granularity=Granularity.CORE)
    assert [(r.cpu, r.core, r.cpuset) for r in plan] == expected
    assert expected and (smt == any("," in r.cpuset for r in plan))


@pytest.mark.integration
def test_oar_26_resources_init_default_mode_merges_single_pu_cores(tmp_path, oar_26_script):
    """Why a core without hyperthreads is numbered as with -t: 2.6.1's default mode makes one
    resource of a package's single-PU cores (a 2x2 machine gets two resources, not four)."""
    root = build_root(tmp_path / "root", fakeroot.two_sockets_two_cores())
    merged = run_oar_26_resources_init(tmp_path, oar_26_script, root, "node-x", threads=False,
                                       cpu_base=0, core_base=0)
    assert merged == [(1, 2, "0,1"), (2, 4, "2,3")]
