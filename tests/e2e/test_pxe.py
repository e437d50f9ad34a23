"""End-to-end: diskless VMs netboot from an OAR Live server booted from the ISO (oar.pxe=1).

`oar-vcluster up --pxe`: the server boots the ISO with oar.pxe=1; the nodes have no disk, no CD
and no kernel. A BIOS node netboots with its NIC's boot ROM (Debian's ipxe-qemu); a UEFI node
(OVMF, no NIC ROM) with the firmware's own PXE, which must get the UEFI loader (snponly.efi)
from the server, as real UEFI machines do. With the LAN's DHCP answering the server only, the
server gives the nodes their addresses (authoritative); with the LAN's DHCP answering everyone,
it serves proxy-DHCP beside it. Either way the nodes must become Alive under their MAC-derived
names and run jobs.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace

import pytest

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


def with_leased_addresses(state: ClusterState) -> ClusterState:
    """The nodes' addresses as the server's dnsmasq leased them (authoritative mode: not the
    LAN's fixed leases the launcher planned), so that ssh to the nodes works."""
    leases = Remote(state).run("sudo -n cat /run/oar-live/pxe/dnsmasq.leases", timeout=60).stdout
    by_mac = {words[1]: words[2] for words in map(str.split, leases.splitlines())
              if len(words) >= 3}
    for node in state.nodes:
        if node.mac in by_mac:
            state = state.with_machine(replace(node, address=by_mac[node.mac]))
    state.save()
    return state


def vcluster_down(state_dir, state) -> None:
    subprocess.run(VCLUSTER + ["--state-dir", str(state_dir), "down", "--keep-logs"], check=False)
    left = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert state is None or state.netns not in left
    assert not vstate.our_processes(state_dir)


@pytest.fixture(scope="module")
def authoritative(artifacts, tmp_path_factory):
    state_dir = tmp_path_factory.mktemp("vcluster-pxe")
    result, state = vcluster_up(artifacts, state_dir, "authoritative", 2, "bios,uefi")
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        yield with_leased_addresses(state)
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
        assert f"BOOTIF=01-{node.mac.replace(':', '-')}" in cmdline
        assert int(node.address.rsplit(".", 1)[1]) >= 128
    log = remote.run("sudo -n journalctl -u oar-live-pxe --no-pager", timeout=120).stdout
    assert log.count("GET /filesystem.squashfs") >= len(authoritative.nodes), log[-3000:]


def test_a_uefi_node_netbooted_through_its_firmware_pxe_and_the_uefi_loader(authoritative):
    uefi = [m for m in authoritative.nodes if m.firmware == "uefi"]
    assert len(uefi) == 1
    console = serial(authoritative, uefi[0].name)
    assert "NBP filename is snponly.efi" in console, console[:3000]  # OVMF's PXE asked us
    assert "NBP file downloaded successfully" in console
    assert "boot.ipxe" in console  # snponly.efi (iPXE) then took the served menu


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
        cmdline = remote.run("cat /proc/cmdline", node, timeout=120).stdout.split()
        assert "oar.role=node" in cmdline and "oar.server=10.77.0.2" in cmdline
        assert "fetch=http://10.77.0.2:6682/filesystem.squashfs" in cmdline
        assert f"BOOTIF=01-{node.mac.replace(':', '-')}" in cmdline
        status = remote.cluster_status()
        assert [n["host"] for n in status["nodes"] if n["state"] == "Alive"] == [
            node.oar_hostname]
    finally:
        vcluster_down(state_dir, state)
