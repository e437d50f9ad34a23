"""Detection through a root prefix: CPUs, memory, interfaces, boot interface, stable hostname."""

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from autoconf.detect import (
    MAX_CPU_ID,
    MAX_CPUS,
    Cpu,
    Detection,
    DetectionError,
    Interface,
    cluster_address,
    detect,
    parse_cpu_list,
    pxe_boot_mac,
)
from tests.autoconf import fakeroot
from tests.autoconf.fakeroot import FakeMachine, FakeNic, build_root


def detect_layout(tmp_path, machine, **kw):
    return detect(build_root(tmp_path, machine), **kw)


def test_parse_cpu_list_kernel_format():
    assert parse_cpu_list("0-3,5,8-9\n") == [0, 1, 2, 3, 5, 8, 9]
    assert parse_cpu_list("0") == [0]
    assert parse_cpu_list("") == []


def test_one_socket_one_core(tmp_path):
    d = detect_layout(tmp_path, fakeroot.one_socket_one_core())
    assert d.cpus == (Cpu(cpu=0, socket=0, core=0, thread=0),)
    assert d.mem_mib == 2_030_684 // 1024


def test_two_sockets_two_cores(tmp_path):
    d = detect_layout(tmp_path, fakeroot.two_sockets_two_cores())
    assert [(c.cpu, c.socket, c.core, c.thread) for c in d.cpus] == [
        (0, 0, 0, 0), (1, 0, 1, 0), (2, 1, 0, 0), (3, 1, 1, 0)]
    assert (d.sockets, d.cores) == (2, 4)


def test_hyperthreads_are_indexed_within_their_core(tmp_path):
    d = detect_layout(tmp_path, fakeroot.two_sockets_four_cores_ht())
    assert len(d.cpus) == 16 and (d.sockets, d.cores) == (2, 8)
    by_id = {c.cpu: c for c in d.cpus}
    # cpu3 and cpu11 are the two threads of socket 0's core 10 (a real gap in core ids)
    assert by_id[3] == Cpu(cpu=3, socket=0, core=10, thread=0)
    assert by_id[11] == Cpu(cpu=11, socket=0, core=10, thread=1)
    assert by_id[12] == Cpu(cpu=12, socket=1, core=0, thread=1)
    assert sum(c.thread for c in d.cpus) == 8


def test_interleaved_socket_numbering(tmp_path):
    d = detect_layout(tmp_path, fakeroot.interleaved_sockets())
    assert [c.socket for c in d.cpus] == [0, 1, 0, 1, 0, 1, 0, 1]
    assert [c.core for c in d.cpus] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_offline_cpu_is_left_out(tmp_path):
    d = detect_layout(tmp_path, fakeroot.one_cpu_offline())
    assert [c.cpu for c in d.cpus] == [0, 1, 3]


def test_without_global_online_file_each_cpu_online_file_counts(tmp_path):
    root = build_root(tmp_path, fakeroot.one_cpu_offline())
    (root / "sys/devices/system/cpu/online").unlink()
    assert [c.cpu for c in detect(root).cpus] == [0, 1, 3]


def test_missing_topology_gives_unknown_socket(tmp_path):
    root = build_root(tmp_path, fakeroot.two_sockets_two_cores())
    for n in range(4):
        for f in (root / f"sys/devices/system/cpu/cpu{n}/topology").iterdir():
            f.unlink()
    assert {c.socket for c in detect(root).cpus} == {-1}


def test_no_cpu_or_no_memory_is_a_detection_error(tmp_path):
    root = build_root(tmp_path, fakeroot.one_socket_one_core())
    (root / "proc/meminfo").write_text("MemFree: 1 kB\n")
    with pytest.raises(DetectionError, match="MemTotal"):
        detect(root)
    (root / "sys/devices/system/cpu/online").write_text("\n")
    with pytest.raises(DetectionError, match="no online CPU"):
        detect(root)


def test_interfaces_skip_lo_and_list_physical_first(tmp_path):
    d = detect_layout(tmp_path, fakeroot.this_kind_of_vm())
    assert [i.name for i in d.interfaces] == ["eth0", "ifb0", "ifb1"]
    assert d.interface("eth0") == Interface("eth0", "06:00:ac:10:00:02", ("192.0.2.2/24",))


def test_boot_interface_from_default_route_and_hostname_from_its_mac(tmp_path):
    machine = replace(fakeroot.two_sockets_two_cores(), nics=(
        FakeNic("enp1s0", "AA:BB:CC:00:00:01", ("192.168.1.7/24",)),
        FakeNic("enp2s0", "aa:bb:cc:00:00:02", ("10.0.0.7/16", "fd00::7/64")),
    ), default_route="enp2s0")
    d = detect_layout(tmp_path, machine)
    assert d.boot_interface == "enp2s0" and d.mac == "aa:bb:cc:00:00:02"
    assert d.hostname == "node-aabbcc000002"
    assert cluster_address(d, None) == "10.0.0.7"
    assert cluster_address(d, "192.168.1.0/24") == "192.168.1.7"
    assert cluster_address(d, "enp1s0") == "192.168.1.7"
    assert cluster_address(d, "172.16.0.0/12") is None


def test_pxe_bootif_wins_over_the_default_route(tmp_path):
    machine = replace(fakeroot.two_sockets_two_cores(), nics=(
        FakeNic("eno1", "aa:bb:cc:00:00:01", ("192.168.1.7/24",)),
        FakeNic("eno2", "aa:bb:cc:00:00:02", ("10.0.0.7/24",)),
    ), default_route="eno1")
    cmdline = "initrd=initrd.img boot=live BOOTIF=01-AA-BB-CC-00-00-02"
    d = detect_layout(tmp_path, machine, cmdline=cmdline)
    assert d.boot_interface == "eno2" and d.hostname == "node-aabbcc000002"
    assert detect_layout(tmp_path / "again", machine).boot_interface == "eno1"


def test_oar_net_picks_the_cluster_interface(tmp_path):
    machine = replace(fakeroot.two_sockets_two_cores(), nics=(
        FakeNic("eno1", "aa:bb:cc:00:00:01", ("192.168.1.7/24",)),
        FakeNic("eno2", "aa:bb:cc:00:00:02", ("10.0.0.7/24",)),
    ), default_route="eno1")
    assert detect_layout(tmp_path, machine, net="10.0.0.0/8").boot_interface == "eno2"


def test_without_route_the_first_physical_interface(tmp_path):
    machine = replace(fakeroot.this_kind_of_vm(), default_route=None)
    assert detect_layout(tmp_path, machine).boot_interface == "eth0"


def test_without_interface_the_hostname_comes_from_dmi(tmp_path):
    machine = replace(fakeroot.two_sockets_two_cores(), nics=(), default_route=None,
                      product_uuid="4C4C4544-0042-3510-8052-B4C04F4E3232")
    d = detect_layout(tmp_path, machine)
    assert d.mac is None and d.boot_interface is None
    assert d.product_uuid == "4c4c4544-0042-3510-8052-b4c04f4e3232"
    assert d.hostname == "node-4c4c45440042"


def test_placeholder_dmi_uuid_is_ignored(tmp_path):
    machine = replace(fakeroot.one_socket_one_core(), nics=(), default_route=None,
                      product_uuid="03000200-0400-0500-0006-000700080009",
                      extra={"etc/machine-id": "0123456789abcdef0123456789abcdef\n"})
    d = detect_layout(tmp_path, machine)
    assert d.product_uuid is None and d.hostname == "node-0123456789ab"


def test_bootif_parsing():
    assert pxe_boot_mac("BOOTIF=01-52-54-00-12-34-56") == "52:54:00:12:34:56"
    assert pxe_boot_mac("BOOTIF=52:54:00:12:34:56") == "52:54:00:12:34:56"
    assert pxe_boot_mac("BOOTIF=garbage quiet") is None
    assert pxe_boot_mac("quiet") is None


def test_json_round_trip(tmp_path):
    d = detect_layout(tmp_path, fakeroot.two_sockets_four_cores_ht())
    again = Detection.from_json(json.loads(json.dumps(d.to_json())))
    assert again == d


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda j: j.update(hostname="node-../etc"), "hostname"),
        (lambda j: j.update(cpus=[]), "cpus"),
        (lambda j: j["cpus"][0].update(cpu=-1), "cpus[0].cpu"),
        (lambda j: j["cpus"][1].update(cpu=0), "twice"),
        (lambda j: j["cpus"][0].update(core="1"), "cpus[0].core"),
        (lambda j: j.update(mem_mib=0), "mem_mib"),
        (lambda j: j["interfaces"][0].update(addresses=["10.0.0.1"]), "ADDRESS/PREFIX"),
        (lambda j: j["interfaces"][0].update(name="eth0; rm -rf /"), "interfaces[0].name"),
        (lambda j: j["interfaces"].append(dict(j["interfaces"][0])), "appears twice"),
        (lambda j: j["cpus"][1].update(core=0), "socket 0 core 0 thread 0 appears twice"),
        (lambda j: j["cpus"][0].update(thread=True), "cpus[0].thread must be an integer"),
        (lambda j: j.update(admin=True), "unknown field admin"),
        (lambda j: j.pop("mem_mib"), "missing field mem_mib"),
        (lambda j: j.update(boot_interface="wlan9"), "boot_interface"),
        (lambda j: j.update(mac="AA:BB"), "mac"),
    ],
)
def test_from_json_refuses_malformed_payloads(tmp_path, mutate, message):
    data = detect_layout(tmp_path, fakeroot.two_sockets_two_cores()).to_json()
    mutate(data)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Detection.from_json(data)


def test_from_json_refuses_non_objects():
    with pytest.raises(ValueError, match="must be a JSON object"):
        Detection.from_json(["node-aabbccddeeff"])


def test_from_json_takes_as_many_cpus_as_the_limits_allow_and_no_more(tmp_path):
    data = detect_layout(tmp_path, fakeroot.two_sockets_two_cores()).to_json()
    data["cpus"] = [{"cpu": n, "socket": 0, "core": n, "thread": 0} for n in range(MAX_CPUS)]
    data["cpus"][-1]["cpu"] = MAX_CPU_ID
    assert len(Detection.from_json(data).cpus) == MAX_CPUS
    data["cpus"].append({"cpu": MAX_CPUS, "socket": 1, "core": 0, "thread": 0})
    with pytest.raises(ValueError, match=f"1 to {MAX_CPUS} processors"):
        Detection.from_json(data)
    data["cpus"] = [{"cpu": MAX_CPU_ID + 1, "socket": 0, "core": 0, "thread": 0}]
    with pytest.raises(ValueError, match=f"between 0 and {MAX_CPU_ID}"):
        Detection.from_json(data)


def test_this_machine_real_sys_and_proc():
    """The real /sys of this machine, checked against what os and /proc/cpuinfo say."""
    d = detect(Path("/"))
    processors = [int(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text()
                  .splitlines() if line.startswith("processor")]
    assert [c.cpu for c in d.cpus] == processors
    assert d.mem_mib == os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    if d.mac is not None:
        assert d.hostname == "node-" + d.mac.replace(":", "")
    names = sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name != "lo")
    assert sorted(i.name for i in d.interfaces) == [
        n for n in names if (Path("/sys/class/net") / n / "address").read_text().strip()
        not in ("", "00:00:00:00:00:00")]
    Detection.from_json(d.to_json())  # what a real node would post is accepted


def test_a_layout_without_sysfs_cpus_is_an_error(tmp_path):
    machine = FakeMachine(cpus=())
    root = build_root(tmp_path, machine)
    with pytest.raises(DetectionError):
        detect(root)
