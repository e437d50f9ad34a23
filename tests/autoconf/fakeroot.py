"""Fake machine roots for tests: /sys and /proc trees laid out as the kernel lays them out.

`build_root(tmp_path, two_sockets_four_cores_ht())` writes a tree that `autoconf.detect.detect`
reads as if it were a real machine: CPU topology under sys/devices/system/cpu (cpu0 without an
`online` file, offline CPUs without a `topology` directory, sibling lists such as `0,8`), a
matching x86 proc/cpuinfo (what OAR's oar_resources_init reads), proc/meminfo, sys/class/net
symlinks into sys/devices (physical NICs have a `device` link, virtual ones live under
devices/virtual), proc/net/route, proc/cmdline and the DMI product_uuid. Interface addresses
go to sys/class/net/<if>/test_addresses, the one file that exists only in fake trees.
The layouts below follow topologies captured on real machines.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class FakeCpu:
    cpu: int  # N of cpuN
    socket: int  # physical_package_id
    core: int  # core_id (package-local, not necessarily contiguous)


@dataclass(frozen=True)
class FakeNic:
    name: str
    mac: str
    addresses: tuple[str, ...] = ()
    physical: bool = True


@dataclass(frozen=True)
class FakeMachine:
    cpus: tuple[FakeCpu, ...]
    offline: frozenset[int] = frozenset()
    mem_kib: int = 8_152_236
    nics: tuple[FakeNic, ...] = (FakeNic("eth0", "52:54:00:12:34:56", ("10.0.0.5/24",)),)
    default_route: str | None = "eth0"
    cmdline: str = "BOOT_IMAGE=/live/vmlinuz boot=live components quiet"
    product_uuid: str | None = "4c4c4544-0042-3510-8052-b4c04f4e3232"
    extra: dict[str, str] = field(default_factory=dict)  # relative path -> content


def _cpus(sockets: int, cores: int, threads: int, core_ids: list[int] | None = None,
          interleaved: bool = False) -> tuple[FakeCpu, ...]:
    """Linux numbering: first threads of every core, then second threads (Intel style)."""
    core_ids = core_ids or list(range(cores))
    slots = []
    for thread in range(threads):
        if interleaved:
            slots += [(s, c, thread) for c in range(cores) for s in range(sockets)]
        else:
            slots += [(s, c, thread) for s in range(sockets) for c in range(cores)]
    return tuple(FakeCpu(n, s, core_ids[c]) for n, (s, c, _t) in enumerate(slots))


def one_socket_one_core() -> FakeMachine:
    return FakeMachine(_cpus(1, 1, 1), mem_kib=2_030_684)


def two_sockets_two_cores() -> FakeMachine:
    return FakeMachine(_cpus(2, 2, 1), mem_kib=16_367_132)


def two_sockets_four_cores_ht() -> FakeMachine:
    """A dual Xeon: core ids 0,1,9,10 (the gaps are real), siblings N and N+8."""
    return FakeMachine(_cpus(2, 4, 2, core_ids=[0, 1, 9, 10]), mem_kib=65_747_968)


def one_socket_four_cores_ht() -> FakeMachine:
    """4 cores x 2 threads, siblings N and N+4 (Intel's numbering: first threads, then seconds)."""
    return FakeMachine(_cpus(1, 4, 2), mem_kib=16_303_340)


def adjacent_siblings() -> FakeMachine:
    """4 cores x 2 threads, siblings 2N and 2N+1 (AMD's and many VMs' numbering)."""
    return FakeMachine(tuple(FakeCpu(n, 0, n // 2) for n in range(8)), mem_kib=16_303_340)


def interleaved_sockets() -> FakeMachine:
    """cpu0 on socket 0, cpu1 on socket 1, cpu2 on socket 0, ... (many AMD and Dell boards)."""
    return FakeMachine(_cpus(2, 4, 1, interleaved=True), mem_kib=32_858_344)


def one_cpu_offline() -> FakeMachine:
    """1 socket x 4 cores with cpu2 taken offline (`echo 0 > cpu2/online`)."""
    return FakeMachine(_cpus(1, 4, 1), offline=frozenset({2}), mem_kib=8_040_112)


def this_kind_of_vm() -> FakeMachine:
    """The CI machine as captured: 1 socket x 2 cores, eth0 + two virtual ifb, no DMI."""
    return FakeMachine(
        _cpus(1, 2, 1), mem_kib=24_684_096, product_uuid=None,
        nics=(FakeNic("eth0", "06:00:ac:10:00:02", ("192.0.2.2/24",)),
              FakeNic("ifb0", "9a:4f:21:3e:c0:11", physical=False),
              FakeNic("ifb1", "3e:61:0b:9d:52:07", physical=False)),
        cmdline="console=ttyS0 quiet reboot=k panic=1 -- --init-arg")


LAYOUTS = {
    "1x1": one_socket_one_core,
    "2x2": two_sockets_two_cores,
    "2x4-ht": two_sockets_four_cores_ht,
    "1x4-ht": one_socket_four_cores_ht,
    "1x4-ht-adjacent": adjacent_siblings,
    "interleaved": interleaved_sockets,
    "offline": one_cpu_offline,
    "vm": this_kind_of_vm,
}


def cpu_list(ids: list[int]) -> str:
    """The kernel's list format: 0-3,5,8-9."""
    ids = sorted(ids)
    parts: list[str] = []
    start = prev = None
    for n in [*ids, None]:
        if start is not None and (n is None or n != prev + 1):
            parts.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = None
        if n is not None and start is None:
            start = n
        prev = n
    return ",".join(parts)


def cpu_mask(ids: list[int], count: int) -> str:
    """The kernel's mask format (the files without _list, which hwloc reads): 32-bit hex words,
    most significant first, comma-separated: cpus 0 and 4 of 8 are `00000011`."""
    value = sum(1 << n for n in ids)
    words = max(1, (count + 31) // 32)
    return ",".join(f"{(value >> (32 * w)) & 0xFFFFFFFF:08x}" for w in reversed(range(words)))


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _cpuinfo(online: list[FakeCpu], all_cpus: tuple[FakeCpu, ...]) -> str:
    blocks = []
    for c in online:
        siblings = sum(1 for o in online if o.socket == c.socket)
        cores = len({o.core for o in online if o.socket == c.socket})
        blocks.append(
            f"processor\t: {c.cpu}\nvendor_id\t: GenuineIntel\ncpu family\t: 6\n"
            f"model name\t: Intel(R) Xeon(R) CPU E5-2630 v3 @ 2.40GHz\n"
            f"physical id\t: {c.socket}\nsiblings\t: {siblings}\ncore id\t\t: {c.core}\n"
            f"cpu cores\t: {cores}\napicid\t\t: {c.socket * 32 + c.core * 2}\n"
            f"flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep ht\n")
    return "\n".join(blocks) + "\n"


def _route(machine: FakeMachine) -> str:
    lines = ["Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT"]
    for nic in machine.nics:
        for addr in nic.addresses:
            net = ipaddress.ip_interface(addr).network
            if net.version != 4:
                continue
            dest = int(net.network_address).to_bytes(4, "big")[::-1].hex().upper()
            mask = int(net.netmask).to_bytes(4, "big")[::-1].hex().upper()
            lines.append(f"{nic.name}\t{dest}\t00000000\t0001\t0\t0\t0\t{mask}\t0\t0\t0")
    if machine.default_route:
        lines.insert(1, f"{machine.default_route}\t00000000\t0100000A\t0003\t0\t0\t100\t"
                        "00000000\t0\t0\t0")
    return "\n".join(lines) + "\n"


def build_root(root: Path, machine: FakeMachine) -> Path:
    """Write `machine` as a fake root under `root`; returns `root`."""
    online = [c for c in machine.cpus if c.cpu not in machine.offline]
    ids = [c.cpu for c in machine.cpus]
    base = "sys/devices/system/cpu"
    _write(root, f"{base}/online", cpu_list([c.cpu for c in online]) + "\n")
    _write(root, f"{base}/possible", cpu_list(ids) + "\n")
    _write(root, f"{base}/present", cpu_list(ids) + "\n")
    if machine.offline:
        _write(root, f"{base}/offline", cpu_list(sorted(machine.offline)) + "\n")
    for c in machine.cpus:
        d = f"{base}/cpu{c.cpu}"
        (root / d).mkdir(parents=True, exist_ok=True)
        if c.cpu != 0:  # cpu0 cannot be unplugged: the kernel gives it no `online` file
            _write(root, f"{d}/online", "0\n" if c.cpu in machine.offline else "1\n")
        if c.cpu in machine.offline:
            continue  # an offline CPU has no topology directory
        siblings = [o.cpu for o in online if (o.socket, o.core) == (c.socket, c.core)]
        package = [o.cpu for o in online if o.socket == c.socket]
        _write(root, f"{d}/topology/physical_package_id", f"{c.socket}\n")
        _write(root, f"{d}/topology/die_id", "0\n")
        _write(root, f"{d}/topology/core_id", f"{c.core}\n")
        _write(root, f"{d}/topology/thread_siblings_list", cpu_list(siblings) + "\n")
        _write(root, f"{d}/topology/core_cpus_list", cpu_list(siblings) + "\n")
        _write(root, f"{d}/topology/core_siblings_list", cpu_list(package) + "\n")
        _write(root, f"{d}/topology/package_cpus_list", cpu_list(package) + "\n")
        for name, ids in (("thread_siblings", siblings), ("core_cpus", siblings),
                          ("core_siblings", package), ("package_cpus", package)):
            _write(root, f"{d}/topology/{name}", cpu_mask(ids, len(machine.cpus)) + "\n")
    _write(root, "proc/cpuinfo", _cpuinfo(online, machine.cpus))
    _write(root, "proc/meminfo",
           f"MemTotal:       {machine.mem_kib} kB\nMemFree:        {machine.mem_kib // 2} kB\n"
           f"MemAvailable:   {machine.mem_kib // 3 * 2} kB\nBuffers:           81232 kB\n")
    _write(root, "proc/cmdline", machine.cmdline + "\n")
    _write(root, "proc/net/route", _route(machine))
    net = root / "sys/class/net"
    net.mkdir(parents=True, exist_ok=True)
    nics = [FakeNic("lo", "00:00:00:00:00:00", ("127.0.0.1/8",), physical=False),
            *machine.nics]
    for slot, nic in enumerate(nics, start=3):
        if nic.physical:
            dev = f"sys/devices/pci0000:00/0000:00:{slot:02x}.0"
            (root / dev).mkdir(parents=True, exist_ok=True)
            ndir = f"{dev}/virtio{slot}/net/{nic.name}"
            (root / ndir).mkdir(parents=True, exist_ok=True)
            (root / ndir / "device").symlink_to(f"../../../virtio{slot}")
        else:
            ndir = f"sys/devices/virtual/net/{nic.name}"
        _write(root, f"{ndir}/address", nic.mac + "\n")
        _write(root, f"{ndir}/type", "772\n" if nic.name == "lo" else "1\n")
        _write(root, f"{ndir}/operstate", "unknown\n" if nic.name == "lo" else "up\n")
        _write(root, f"{ndir}/test_addresses", "".join(a + "\n" for a in nic.addresses))
        (net / nic.name).symlink_to(Path("../..") / Path(ndir).relative_to("sys"))
    if machine.product_uuid is not None:
        _write(root, "sys/class/dmi/id/product_uuid", machine.product_uuid + "\n")
    for rel, text in machine.extra.items():
        _write(root, rel, text)
    return root
