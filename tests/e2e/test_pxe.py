"""End-to-end: diskless VMs netboot from an OAR Live server booted from the ISO (oar.pxe=1).

`oar-vcluster up --pxe`: the server boots the ISO with oar.pxe=1; the nodes have no disk, no CD
and no kernel. A BIOS node netboots with its NIC's boot ROM (Debian's ipxe-qemu); a UEFI node
enforcing Secure Boot (OVMF with Microsoft's keys, no NIC ROM) with the firmware's own PXE,
which must get Debian's signed shim and grub from the server, as real machines do. With the
LAN's DHCP answering the server only, the server gives the nodes their addresses
(authoritative); with the LAN's DHCP answering everyone, it serves proxy-DHCP beside it. Either
way the nodes must become Alive under their MAC-derived names and run jobs (their output read
on the server: the home is shared with netbooted nodes too), and every oar-vcluster command
that names a node must reach it.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from autoconf.detect import pxe_boot_mac
from boot.console import read_pxe, server_steps
from boot.vcluster import state as vstate
from boot.vcluster.cli import DEMO_JOB
from boot.vcluster.remote import Remote
from boot.vcluster.state import ClusterState

pytestmark = pytest.mark.e2e

VCLUSTER = [sys.executable, "-m", "boot.vcluster"]
NODE_MEM = "1536"  # the squashfs is fetched into RAM


def serial(state: ClusterState, name: str) -> str:
    return state.serial_log(state.machine(name)).read_bytes().decode(errors="replace")


def vcluster_up(artifacts, state_dir, mode: str, nodes: int, firmware: str = "bios"):
    up = VCLUSTER + ["--state-dir", str(state_dir), "up", "--iso", str(artifacts / "oar-live.iso"),
                     "--nodes", str(nodes), "--mem", NODE_MEM, "--pxe", mode, "--timeout", "1200",
                     "--firmware", firmware]
    started = time.monotonic()
    result = subprocess.run(up, capture_output=True, text=True)
    print(result.stdout, result.stderr, f"up --pxe {mode} took {time.monotonic() - started:.0f} s",
          sep="\n")
    state = vstate.load(state_dir)
    return result, state


def vcluster_down(state_dir, state) -> None:
    subprocess.run(VCLUSTER + ["--state-dir", str(state_dir), "down", "--keep-logs"], check=False)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert state is None or state.netns not in left
    assert not vstate.our_processes(state_dir)


@pytest.fixture(scope="module")
def authoritative(artifacts, tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("vcluster-pxe")
    result, state = vcluster_up(artifacts, state_dir, "authoritative", 2, "bios,secure-boot")
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        yield state
    finally:
        vcluster_down(state_dir, state)


def test_server_chose_authoritative_dhcp_and_said_so(authoritative):
    console = serial(authoritative, "server")
    service = read_pxe(console)
    assert service is not None, console[-3000:]  # it said which interface only, and the mode
    assert (service.mode, service.network) == ("authoritative", "10.77.0.0/24")
    assert server_steps(console).get("netboot service (PXE)") in ("changed", "unchanged")


def test_netbooted_nodes_got_address_and_squashfs_from_the_server(authoritative):
    remote = Remote(authoritative)
    leases = remote.run("sudo -n cat /run/oar-live/pxe/dnsmasq.leases", timeout=60).stdout
    for node in authoritative.nodes:
        assert node.mac in leases, leases  # the server, not the LAN's DHCP, gave the address
        # the address is in the server's range, and the node's kernel line says who to join
        cmdline = remote.run("cat /proc/cmdline", node, timeout=120).stdout.split()
        assert "oar.role=node" in cmdline and "oar.server=10.77.0.2" in cmdline
        assert pxe_boot_mac(" ".join(cmdline)) == node.mac  # BOOTIF: iPXE's or GRUB's form
        assert int(remote.address(node).rsplit(".", 1)[1]) >= 128
        # and its /home is the server's
        home = remote.run("findmnt -n -o SOURCE,FSTYPE /home", node, timeout=60).stdout.split()
        assert home == ["10.77.0.2:/", "nfs4"], home
    log = remote.run("sudo -n journalctl -u oar-live-pxe --no-pager", timeout=120).stdout
    assert log.count("GET /filesystem.squashfs") >= len(authoritative.nodes), log[-3000:]


def test_run_on_and_status_reach_every_netbooted_node(authoritative):
    vcluster = VCLUSTER + ["--state-dir", str(authoritative.state_dir)]
    remote = Remote(authoritative)
    status = subprocess.run(vcluster + ["status"], capture_output=True, text=True, timeout=300)
    assert status.returncode == 0, status.stdout + status.stderr
    for node in authoritative.nodes:
        run_on = subprocess.run(vcluster + ["run", "--on", node.name, "--", "hostname"],
                                capture_output=True, text=True, timeout=300)
        assert (run_on.returncode, run_on.stdout.strip()) == (0, node.oar_hostname), run_on.stderr
        line = next(ln for ln in status.stdout.splitlines() if ln.startswith(node.name + " "))
        assert remote.address(node) in line.split()


def test_a_secure_boot_node_netbooted_through_debians_signed_shim_and_grub(authoritative):
    """OVMF enforcing Secure Boot, its own PXE: shim over TFTP, the signed network grub beside
    it, the served grub menu, Debian's signed kernel over HTTP; nothing unsigned would start."""
    uefi = [m for m in authoritative.nodes if m.firmware == "secure-boot"]
    assert len(uefi) == 1
    console = serial(authoritative, uefi[0].name)
    assert "NBP filename is shimx64.efi" in console, console[:3000]  # OVMF's PXE asked us
    assert "NBP file downloaded successfully" in console
    assert "OAR Live: ask what this machine is" in console  # the signed grub's served menu
    kernel = Remote(authoritative).run("sudo -n dmesg | grep -m1 'secureboot:'", uefi[0],
                                       timeout=60).stdout
    assert "Secure boot enabled" in kernel, kernel


def test_netbooted_nodes_are_alive_under_their_mac_names_and_run_a_two_node_job(authoritative):
    remote = Remote(authoritative)
    status = remote.cluster_status()
    alive = {n["host"] for n in status["nodes"] if n["state"] == "Alive"}
    assert alive == {m.oar_hostname for m in authoritative.nodes}
    job = remote.submit(DEMO_JOB, "nodes=2")
    assert remote.wait_job(job, 600) == "Terminated"
    assert sorted(remote.job_output(job).split()) == sorted(
        m.oar_hostname for m in authoritative.nodes)


def test_beside_the_lans_dhcp_server_the_server_is_a_proxy(artifacts, tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("vcluster-pxe-proxy")
    result, state = vcluster_up(artifacts, state_dir, "proxy", 1)
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        console = serial(state, "server")
        service = read_pxe(console)
        assert service is not None and (service.mode, service.other_dhcp) == ("proxy",
                                                                              "10.77.0.1")
        node = state.nodes[0]
        remote = Remote(state)
        # The node's address came from the LAN's server (its fixed lease), its boot from ours.
        lan_leases = (state_dir / "dnsmasq.leases").read_text()
        assert any(words[1:3] == [node.mac, node.address]
                   for words in map(str.split, lan_leases.splitlines())), lan_leases
        ours = remote.run("sudo -n cat /run/oar-live/pxe/dnsmasq.leases 2>/dev/null; true",
                          timeout=60).stdout
        assert node.mac not in ours, f"the proxy gave the node an address:\n{ours}"
        addresses = remote.run("ip -4 -o addr show", node, timeout=120).stdout
        assert f" {node.address}/" in addresses, addresses
        cmdline = remote.run("cat /proc/cmdline", node, timeout=120).stdout.split()
        assert "oar.role=node" in cmdline and "oar.server=10.77.0.2" in cmdline
        assert "fetch=http://10.77.0.2:6682/filesystem.squashfs" in cmdline
        assert pxe_boot_mac(" ".join(cmdline)) == node.mac  # BOOTIF: iPXE's or GRUB's form
        status = remote.cluster_status()
        assert [n["host"] for n in status["nodes"] if n["state"] == "Alive"] == [
            node.oar_hostname]
        job = remote.submit(DEMO_JOB, "nodes=1")
        assert remote.wait_job(job, 600) == "Terminated"
        assert remote.job_output(job).split() == [node.oar_hostname]
    finally:
        vcluster_down(state_dir, state)
