"""The server's netboot service: DHCP mode, dnsmasq's configuration, the menus nodes get, and
(integration) the real dnsmasq and HTTP server answering a real DHCP client in namespaces."""

from __future__ import annotations

import dataclasses
import http.client
import ipaddress
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from autoconf.detect import Interface
from boot import console
from boot.pxe import configure as pxe
from boot.pxe import dhcpprobe
from boot.pxe import serve as pxeserve

PROJECT = Path(__file__).resolve().parents[3]


ETH0 = Interface("eth0", "52:54:00:00:00:01", ("192.168.1.20/24",))
ETH1 = Interface("eth1", "52:54:00:00:00:02", ())


KEYS = (("oar.keymap", "us"),)


def offer(server: str, yiaddr: str) -> dhcpprobe.Offer:
    return dhcpprobe.Offer(server, server, yiaddr, server, "")


def plan(mode=pxe.Mode.AUTHORITATIVE, **kw) -> pxe.Plan:
    files = pxe.BootFiles(Path("/m/live/vmlinuz"), Path("/m/live/initrd.img"),
                          Path("/m/live/filesystem.squashfs"))
    values = dict(interface="eth1", address=ipaddress.IPv4Interface("10.66.0.1/24"), mode=mode,
                  files=files, node_keys=(("oar.keymap", "fr"),), other_dhcp=None)
    values.update(kw)
    return pxe.Plan(**values)


# ----------------------------------------------------------------------------- decisions


def test_no_other_dhcp_server_means_authoritative():
    assert pxe.decide_mode([], {"10.66.0.1"}) == (pxe.Mode.AUTHORITATIVE, None)


def test_our_own_answers_and_proxy_answers_do_not_make_us_a_proxy():
    ours = offer("10.66.0.1", "10.66.0.150")
    proxy = offer("10.66.0.9", "0.0.0.0")
    assert pxe.decide_mode([ours, proxy], {"10.66.0.1"})[0] is pxe.Mode.AUTHORITATIVE


def test_a_site_dhcp_server_makes_us_a_proxy_and_is_named():
    site = offer("192.168.1.1", "192.168.1.77")
    assert pxe.decide_mode([site], {"192.168.1.20"}) == (pxe.Mode.PROXY, site)


def test_several_interfaces_without_oar_net_are_refused_with_advice():
    with pytest.raises(pxe.PxeError, match="oar.net=<interface>"):
        pxe.cluster_interface(None, (ETH0, ETH1))


def test_the_cluster_interface_is_the_one_oar_net_names_or_the_only_one():
    assert pxe.cluster_interface("eth1", (ETH0, ETH1)) is ETH1
    assert pxe.cluster_interface("192.168.1.0/24", (ETH0, ETH1)) is ETH0
    assert pxe.cluster_interface(None, (ETH1,)) is ETH1
    with pytest.raises(pxe.PxeError, match="no such interface"):
        pxe.cluster_interface("eth7", (ETH0, ETH1))


def test_static_address_comes_from_oar_net_else_a_private_default():
    assert str(pxe.static_address("10.5.0.0/16")) == "10.5.0.1/16"
    assert pxe.static_address("eth1") == pxe.DEFAULT_ADDRESS
    assert pxe.static_address(None) == pxe.DEFAULT_ADDRESS


def test_dhcp_range_is_the_upper_half_and_never_the_server():
    assert pxe.dhcp_range(ipaddress.IPv4Interface("10.66.0.1/24")) == ("10.66.0.128",
                                                                       "10.66.0.254")
    first, last = pxe.dhcp_range(ipaddress.IPv4Interface("10.66.0.200/24"))
    assert ipaddress.IPv4Address(first) > ipaddress.IPv4Address("10.66.0.200")
    first, last = pxe.dhcp_range(ipaddress.IPv4Interface("10.0.0.2/30"))
    assert (first, last) == ("10.0.0.1", "10.0.0.1")


# ----------------------------------------------------------------------------- dnsmasq


def conf_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_dnsmasq_answers_on_the_cluster_interface_only_and_serves_no_dns():
    for mode in pxe.Mode:
        lines = conf_lines(pxe.dnsmasq_conf(plan(mode), Path("/run/oar-live/pxe")))
        assert "interface=eth1" in lines and "bind-interfaces" in lines
        assert "except-interface=lo" in lines and "port=0" in lines
        assert [line for line in lines if line.startswith("interface=")] == ["interface=eth1"]
        assert "pid-file=/run/oar-live/pxe/dnsmasq.pid" in lines
        assert "dhcp-leasefile=/run/oar-live/pxe/dnsmasq.leases" in lines
        assert "tftp-root=/run/oar-live/pxe/tftp" in lines


def test_authoritative_dnsmasq_gives_addresses_and_a_loader_for_each_client_kind():
    lines = conf_lines(pxe.dnsmasq_conf(plan(), Path("/s")))
    assert "dhcp-range=10.66.0.128,10.66.0.254,255.255.255.0,1h" in lines
    assert "dhcp-authoritative" in lines
    boots = [line for line in lines if line.startswith("dhcp-boot=")]
    assert boots == [
        "dhcp-boot=tag:ipxe,boot.ipxe,,10.66.0.1",
        "dhcp-boot=tag:!ipxe,tag:efi64,snponly.efi,,10.66.0.1",
        "dhcp-boot=tag:!ipxe,tag:!efi64,lpxelinux.0,,10.66.0.1",
    ]
    served = {name for _, name in pxe.LOADERS} | {"boot.ipxe"}
    assert {b.split(",")[-3] for b in boots} <= served
    assert "dhcp-option=option:router" in lines  # nodes get no gateway from us


def signed(p: pxe.Plan) -> pxe.Plan:
    """The plan of a server whose medium carries Debian's signed netboot loaders."""
    return dataclasses.replace(p, files=dataclasses.replace(p.files,
                                                            signed_loaders=Path("/m/netboot")))


def test_uefi_nodes_get_the_signed_shim_when_the_medium_has_it_in_both_modes():
    lines = conf_lines(pxe.dnsmasq_conf(signed(plan()), Path("/s")))
    assert "dhcp-boot=tag:!ipxe,tag:efi64,shimx64.efi,,10.66.0.1" in lines
    assert "dhcp-boot=tag:!ipxe,tag:!efi64,lpxelinux.0,,10.66.0.1" in lines
    proxy = conf_lines(pxe.dnsmasq_conf(signed(plan(pxe.Mode.PROXY, other_dhcp="10.66.0.254")),
                                        Path("/s")))
    assert 'pxe-service=tag:!ipxe,X86-64_EFI,"OAR Live",shimx64.efi' in proxy
    assert 'pxe-service=tag:!ipxe,BC_EFI,"OAR Live",shimx64.efi' in proxy


def test_the_signed_grub_gets_a_menu_at_its_prefix_loading_by_http_else_tftp():
    menus = pxe.render_menus(signed(plan(default_entry="node-serial")), "boot=live")
    assert "grub/grub.cfg" not in pxe.render_menus(plan(), "boot=live")
    text = menus["grub/grub.cfg"]
    assert "set default=node-serial" in text
    entry = text.split('--id node-serial', 1)[1].split("\n}", 1)[0]
    linux = re.search(r"^\s*linux (\S+) (.*)$", entry, re.M)
    assert linux[1] == "${oarlive_files}/vmlinuz"
    for word in ("boot=live", "oar.role=node", "oar.server=10.66.0.1", "oar.keymap=fr",
                 "console=ttyS0,115200n8", "fetch=http://10.66.0.1:6682/filesystem.squashfs"):
        assert word in linux[2].split()
    # every entry passes the boot MAC: GRUB's own variable, aa:bb:.. (pxe_boot_mac reads it)
    assert linux[2].split()[-1] == "BOOTIF=01-${net_default_mac}"
    assert text.count("BOOTIF=01-${net_default_mac}") == len(re.findall(r"^\s*linux ", text, re.M))
    assert re.search(r"^\s*initrd \$\{oarlive_files\}/initrd.img$", entry, re.M)
    # TFTP unless the HTTP service's snippet can be sourced (GRUB 2.12 names a port, 2.06 not)
    lines = text.splitlines()
    tftp, source = lines.index("set oarlive_files=(tftp,10.66.0.1)"), lines.index(
        "source (http,10.66.0.1:6682)/grub-http.cfg")
    assert tftp < source < lines.index("set default=node-serial")
    assert menus["grub-http.cfg"] == "set oarlive_files=(http,10.66.0.1:6682)\n"


def test_proxy_dnsmasq_gives_no_address_only_boot_services():
    lines = conf_lines(pxe.dnsmasq_conf(plan(pxe.Mode.PROXY, other_dhcp="10.66.0.254"),
                                        Path("/s")))
    assert "dhcp-range=10.66.0.0,proxy,255.255.255.0" in lines
    assert "dhcp-authoritative" not in lines
    assert not [line for line in lines if line.startswith("dhcp-boot=")]
    services = [line for line in lines if line.startswith("pxe-service=")]
    assert 'pxe-service=tag:!ipxe,x86PC,"OAR Live",lpxelinux.0' in services
    assert 'pxe-service=tag:!ipxe,X86-64_EFI,"OAR Live",snponly.efi' in services
    assert 'pxe-service=tag:ipxe,x86PC,"OAR Live",boot.ipxe' in services


def test_announcement_names_the_mode_the_interface_and_the_other_server():
    text = plan(pxe.Mode.PROXY, other_dhcp="10.66.0.254").announce()
    assert "proxy-DHCP" in text and "10.66.0.254" in text
    assert "eth1 only" in text and "never on any other interface" in text
    assert "authoritative" in plan().announce()


def test_plan_survives_json():
    for p in (plan(pxe.Mode.PROXY, other_dhcp="10.66.0.254"), signed(plan())):
        assert pxe.Plan.from_json(json.loads(json.dumps(p.to_json()))) == p


# ----------------------------------------------------------------------------- menus


def test_served_pxelinux_menu_boots_a_node_that_never_prompts():
    text = pxe.render_menus(plan(), "boot=live systemd.unified_cgroup_hierarchy=0")[
        "pxelinux.cfg/default"]
    assert "DEFAULT node\n" in text and f"TIMEOUT {pxe.MENU_TIMEOUT * 10}\n" in text
    node = re.search(r"LABEL node\n(?:.*\n)*?\s*APPEND (.*)\n\s*IPAPPEND 2\n", text)
    words = node.group(1).split()
    assert words[0] == "initrd=http://10.66.0.1:6682/initrd.img"
    for word in ("boot=live", "systemd.unified_cgroup_hierarchy=0", "oar.role=node",
                 "oar.server=10.66.0.1", "oar.keymap=fr",
                 "fetch=http://10.66.0.1:6682/filesystem.squashfs"):
        assert word in words
    assert "KERNEL http://10.66.0.1:6682/vmlinuz" in text
    # every entry passes the boot MAC (BOOTIF): the hostname is node-<MAC>
    appends = re.findall(r"^\s*APPEND ", text, re.M)
    assert len(appends) == len(re.findall(r"^\s*IPAPPEND 2$", text, re.M)) > 10


def test_served_ipxe_menu_boots_node_with_bootif_by_http():
    p = plan(default_entry="node-serial")
    text = pxe.render_menus(p, "boot=live")["boot.ipxe"]
    assert text.startswith("#!ipxe")
    assert f"choose --default node-serial --timeout {pxe.MENU_TIMEOUT * 1000}" in text
    section = text.split(":node-serial\n", 1)[1].split("boot\n", 1)[0]
    kernel = section.splitlines()[0].split()
    assert kernel[1] == "http://10.66.0.1:6682/vmlinuz"
    assert "oar.role=node" in kernel and "oar.server=10.66.0.1" in kernel
    assert "console=ttyS0,115200n8" in kernel
    assert "BOOTIF=01-${netX/mac:hexhyp}" in kernel
    assert "initrd http://10.66.0.1:6682/initrd.img" in section


def test_nodes_get_the_servers_keymap_and_a_token_only_when_not_baked_in_the_image():
    assert pxe.node_keys("de", "abc123", token_in_image=True) == (("oar.keymap", "de"),)
    keys = dict(pxe.node_keys("us", "abc123", token_in_image=False))
    assert keys["oar.token"] == "abc123"


def test_nodes_use_the_console_the_server_booted_with():
    assert pxe.default_entry("boot=live console=tty0 console=ttyS0,115200n8") == "node-serial"
    assert pxe.default_entry("boot=live console=ttyS0 console=tty0") == "node"
    assert pxe.default_entry("boot=live") == "node"


# ----------------------------------------------------------------------------- actions


class Recorder:
    """A fake process runner: records argument lists, answers `ip addr show` from a table."""

    def __init__(self, addresses: dict[str, list[str]] | None = None, active: bool = False):
        self.calls: list[list[str]] = []
        self.addresses = addresses or {}
        self.active = active

    def __call__(self, argv, check=True, timeout=None, **kw):
        argv = [str(a) for a in argv]
        self.calls.append(argv)
        if argv[:4] == ["ip", "-4", "-o", "addr"]:
            dev = argv[-1]
            out = "".join(f"2: {dev}    inet {a} scope global {dev}\n"
                          for a in self.addresses.get(dev, []))
            return CompletedProcess(argv, 0, out, "")
        if argv[:2] == ["ip", "addr"]:
            self.addresses.setdefault(argv[-1], []).append(argv[3])
        if argv[:2] == ["systemctl", "is-active"]:
            return CompletedProcess(argv, 0 if self.active else 3, "", "")
        if argv[:2] == ["systemctl", "restart"]:
            self.active = True
        return CompletedProcess(argv, 0, "", "")


def test_authoritative_server_without_address_takes_one_and_says_so(tmp_path, capsys):
    run = Recorder()
    netboot = pxe.prepare("eth1", (ETH0, ETH1), tmp_path, run,
                          probe=lambda iface, seconds: [])
    assert netboot.mode is pxe.Mode.AUTHORITATIVE and netboot.interface.name == "eth1"
    assert ["ip", "addr", "replace", "10.66.0.1/24", "dev", "eth1"] in run.calls
    assert netboot.interface.addresses[0] == "10.66.0.1/24"
    assert "taking 10.66.0.1/24" in capsys.readouterr().out


def test_under_networkd_the_address_is_kept_by_a_runtime_network_file(tmp_path, monkeypatch):
    for folder in ("run/systemd/system", "run/systemd/netif"):
        (tmp_path / folder).mkdir(parents=True)
    monkeypatch.setattr(pxe.shutil, "which", lambda name: f"/usr/bin/{name}")
    run = Recorder(addresses={"eth1": ["10.5.0.1/16"]})
    pxe.prepare("10.5.0.0/16", (ETH1,), tmp_path, run,
                probe=lambda iface, seconds: [])
    network = (tmp_path / "run/systemd/network/10-oar-live-pxe-eth1.network").read_text()
    assert "Name=eth1" in network and "Address=10.5.0.1/16" in network
    assert "DHCP=" not in network
    assert ["networkctl", "reconfigure", "eth1"] in run.calls


def test_probe_runs_on_the_cluster_interface_only(tmp_path):
    probed = []
    pxe.prepare("eth0", (ETH0, ETH1), tmp_path, Recorder(),
                probe=lambda iface, seconds: probed.append(iface) or [])
    assert probed == ["eth0"]


def test_proxy_mode_keeps_the_site_address(tmp_path):
    run = Recorder()
    site = offer("192.168.1.1", "192.168.1.99")
    netboot = pxe.prepare("eth0", (ETH0, ETH1), tmp_path, run,
                          probe=lambda iface, seconds: [site])
    assert (netboot.mode, netboot.other_dhcp) == (pxe.Mode.PROXY, "192.168.1.1")
    assert not [c for c in run.calls if c[:2] == ["ip", "addr"]]
    assert netboot.interface == ETH0


def fake_image(root: Path) -> Path:
    """The image's loaders and a boot medium, as small files."""
    for source, _ in pxe.LOADERS:
        (root / source).parent.mkdir(parents=True, exist_ok=True)
        (root / source).write_bytes(source.name.encode() * 10)
    live = root / pxe.MEDIUM / "live"
    live.mkdir(parents=True)
    for name in ("vmlinuz", "initrd.img", "filesystem.squashfs"):
        (live / name).write_bytes(os.urandom(1000))
    (root / pxe.KERNEL_CMDLINE_FILE).parent.mkdir(parents=True)
    (root / pxe.KERNEL_CMDLINE_FILE).write_text("boot=live systemd.unified_cgroup_hierarchy=0\n")
    return root


def test_start_writes_the_service_files_and_restarts_only_on_change(tmp_path):
    root = fake_image(tmp_path)
    (root / "run/systemd/system").mkdir(parents=True)
    run = Recorder()
    netboot = pxe.Netboot(ETH1, pxe.Mode.AUTHORITATIVE, None)
    address = ipaddress.IPv4Interface("10.66.0.1/24")
    cmdline = "boot=live console=ttyS0,115200n8 oar.role=server oar.pxe=1"
    assert pxe.start(netboot, address, KEYS, cmdline, root, run) == (
        True, "authoritative on eth1")
    assert ["systemctl", "restart", pxe.UNIT] in run.calls
    state = root / pxe.STATE_DIR
    tftp = state / "tftp"
    for _, name in pxe.LOADERS:
        assert (tftp / name).read_bytes() == (root / dict((n, s) for s, n in pxe.LOADERS)[name]
                                              ).read_bytes()
    menu = (tftp / "pxelinux.cfg/default").read_text()
    assert "DEFAULT node-serial" in menu and "oar.pxe" not in menu
    assert "interface=eth1" in (state / "dnsmasq.conf").read_text()
    saved = pxe.Plan.from_json(json.loads((state / "plan.json").read_text()))
    assert saved.files.squashfs == root / pxe.MEDIUM / "live/filesystem.squashfs"
    run.calls.clear()
    assert pxe.start(netboot, address, KEYS, cmdline, root, run)[0] is False
    assert ["systemctl", "restart", pxe.UNIT] not in run.calls


def test_a_medium_with_signed_loaders_has_them_served_with_the_grub_menu(tmp_path):
    root = fake_image(tmp_path)
    netboot_dir = root / pxe.MEDIUM / "netboot"
    netboot_dir.mkdir()
    for name in pxe.SIGNED_LOADERS:
        (netboot_dir / name).write_bytes(name.encode() * 100)
    address = ipaddress.IPv4Interface("10.66.0.1/24")
    pxe.start(pxe.Netboot(ETH1, pxe.Mode.AUTHORITATIVE, None), address, KEYS,
              "boot=live oar.role=server oar.pxe=1", root, Recorder())
    state = root / pxe.STATE_DIR
    for name in pxe.SIGNED_LOADERS:
        assert (state / "tftp" / name).read_bytes() == (netboot_dir / name).read_bytes()
    assert "set oarlive_files=(tftp,10.66.0.1)" in (state / "tftp/grub/grub.cfg").read_text()
    assert pxeserve.served_files(pxe.Plan.from_json(json.loads(
        (state / "plan.json").read_text())), state)["grub-http.cfg"] == state / "tftp/grub-http.cfg"
    for name in ("vmlinuz", "initrd.img"):  # links to the medium's, not copies in RAM
        assert (state / "tftp" / name).resolve() == root / pxe.MEDIUM / "live" / name
    assert "tag:efi64,shimx64.efi," in (state / "dnsmasq.conf").read_text()
    # one loader missing: not the signed path (a half set would not boot)
    (netboot_dir / "grubx64.efi").unlink()
    assert pxe.boot_files(root / pxe.MEDIUM).signed_loaders is None


def test_start_without_the_boot_medium_explains(tmp_path):
    netboot = pxe.Netboot(ETH1, pxe.Mode.AUTHORITATIVE, None)
    with pytest.raises(pxe.PxeError, match="not booted from an OAR Live ISO"):
        pxe.start(netboot, ipaddress.IPv4Interface("10.66.0.1/24"), KEYS, "", tmp_path,
                  Recorder())


# ----------------------------------------------------------------------------- HTTP


@pytest.fixture
def http_server(tmp_path):
    files = {}
    for name, size in (("vmlinuz", 3000), ("filesystem.squashfs", 200_000)):
        (tmp_path / name).write_bytes(os.urandom(size))
        files[name] = tmp_path / name
    (tmp_path / "secret").write_text("not served")
    server = pxeserve.BootFileServer(("127.0.0.1", 0), files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, files
    server.shutdown()
    server.server_close()


def get(server, path, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    conn.request("GET", path, headers=headers or {})
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def test_http_sends_the_boot_files_whole_and_by_range(http_server):
    server, files = http_server
    status, body = get(server, "/filesystem.squashfs")
    assert status == 200 and body == files["filesystem.squashfs"].read_bytes()
    status, body = get(server, "/vmlinuz", {"Range": "bytes=100-199"})
    assert status == 206 and body == files["vmlinuz"].read_bytes()[100:200]


def test_http_sends_nothing_else(http_server):
    server, _ = http_server
    for path in ("/secret", "/../secret", "/", "/etc/passwd", "/vmlinuz/../secret"):
        assert get(server, path)[0] == 404


# ----------------------------------------------------------------------------- integration


def ns_run(ns: str, *argv: str, check: bool = True, timeout: float = 60,
           ) -> subprocess.CompletedProcess:
    result = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{argv} in {ns} exited {result.returncode}:\n{result.stdout}"
                             f"{result.stderr}")
    return result


class Lan:
    """A bridge in a namespace of its own and machines (namespaces) plugged into it."""

    def __init__(self, tmp: Path):
        self.prefix = f"oarpxe{secrets.token_hex(3)}"
        self.tmp = tmp
        self.names: list[str] = []
        self.processes: list[subprocess.Popen] = []
        self.bridge = self.netns("br")
        subprocess.run(["ip", "-n", self.bridge, "link", "add", "br0", "type", "bridge"],
                       check=True)
        subprocess.run(["ip", "-n", self.bridge, "link", "set", "br0", "up"], check=True)

    def netns(self, name: str) -> str:
        full = f"{self.prefix}{name}"
        subprocess.run(["ip", "netns", "add", full], check=True)
        self.names.append(full)
        subprocess.run(["ip", "-n", full, "link", "set", "lo", "up"], check=True)
        return full

    def machine(self, name: str, address: str | None = None) -> str:
        """A namespace with eth0 on the bridge."""
        ns = self.netns(name)
        port = f"p{name}"
        subprocess.run(["ip", "-n", self.bridge, "link", "add", port, "type", "veth", "peer",
                        "name", "eth0", "netns", ns], check=True)
        subprocess.run(["ip", "-n", self.bridge, "link", "set", port, "master", "br0", "up"],
                       check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "eth0", "up"], check=True)
        if address:
            subprocess.run(["ip", "-n", ns, "addr", "add", address, "dev", "eth0"], check=True)
        return ns

    def start(self, ns: str, argv: list[str], log: Path) -> subprocess.Popen:
        with open(log, "wb") as out:
            process = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=out,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen) -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self) -> None:
        for process in self.processes:
            self.stop(process)
        for name in reversed(self.names):
            subprocess.run(["ip", "netns", "del", name], check=False)


def _need(*programs: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pytest.fail(f"missing host programs {missing}: make host-test-deps")


@pytest.fixture
def work():
    """A temporary folder dnsmasq (user nobody) can read, unlike pytest's."""
    path = Path(tempfile.mkdtemp(prefix="oar-pxe-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


@pytest.fixture
def lan(work):
    _need("ip", "dnsmasq", "busybox", "curl")
    network = Lan(work)
    yield network
    network.close()
    leftover = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert network.prefix not in leftover


def fake_medium(tmp: Path) -> Path:
    live = tmp / "medium/live"
    live.mkdir(parents=True)
    for name, size in (("vmlinuz", 300_000), ("initrd.img", 500_000),
                       ("filesystem.squashfs", 3_000_000)):
        (live / name).write_bytes(os.urandom(size))
    signed = tmp / "medium/netboot"  # Debian's signed loaders, as export_iso puts them there
    signed.mkdir()
    for name in pxe.SIGNED_LOADERS:
        (signed / name).write_bytes(os.urandom(20_000))
    return tmp / "medium"


def setup_service(lan: Lan, ns: str, tmp: Path) -> tuple[subprocess.CompletedProcess, Path]:
    state = tmp / "state"
    env = ["env", f"PYTHONPATH={PROJECT}", sys.executable]
    result = ns_run(ns, *env, "-m", "boot.pxe.configure", "setup", "--interface", "eth0",
                    "--medium", str(tmp / "medium"), "--state", str(state), "--keymap", "fr",
                    timeout=60)
    lan.start(ns, [*env, "-m", "boot.pxe.serve", "--state", str(state)], tmp / "serve.log")
    wait_listening(ns, pxe.HTTP_PORT)
    return result, state


def wait_listening(ns: str, port: int, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if f":{port} " in ns_run(ns, "ss", "-ltn", check=False).stdout:
            return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on port {port} in {ns}")


def udhcpc(ns: str, tmp: Path, *extra: str) -> dict[str, str]:
    """A real DHCP client; the lease's variables (ip, siaddr, boot_file, ...)."""
    out = tmp / f"lease-{secrets.token_hex(2)}"
    script = tmp / "udhcpc.sh"
    script.write_text(f'#!/bin/sh\n[ "$1" = bound ] && env > {out}\nexit 0\n')
    script.chmod(0o755)
    ns_run(ns, "busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "4", "-T", "2",
           "-s", str(script), *extra, check=False, timeout=60)
    if not out.exists():
        return {}
    return dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)


PXE_CLIENT = ("-V", "PXEClient:Arch:00000:UNDI:002001")
UEFI_CLIENT = ("-V", "PXEClient:Arch:00007:UNDI:003016", "-x", "0x5d:0007")  # x86-64 UEFI


@pytest.mark.integration
def test_authoritative_service_gives_address_loader_menu_and_files(lan, work):
    tmp_path = work
    server = lan.machine("srv")  # no address yet: the service takes one
    client = lan.machine("cli")
    # a second server interface, to a machine that must never get an answer
    other = lan.netns("oth")
    subprocess.run(["ip", "-n", server, "link", "add", "eth1", "type", "veth", "peer", "name",
                    "eth0", "netns", other], check=True)
    subprocess.run(["ip", "-n", server, "addr", "add", "10.99.0.1/24", "dev", "eth1"],
                   check=True)
    for ns, dev in ((server, "eth1"), (other, "eth0")):
        subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
    medium = fake_medium(tmp_path)
    setup, state = setup_service(lan, server, tmp_path)
    assert "authoritative DHCP for 10.66.0.0/24" in setup.stdout
    assert "on eth0 only" in setup.stdout

    lease = udhcpc(client, tmp_path, *PXE_CLIENT)
    assert ipaddress.IPv4Address(lease["ip"]) in ipaddress.IPv4Network("10.66.0.128/25")
    assert lease["siaddr"] == "10.66.0.1" and lease["boot_file"] == "lpxelinux.0"
    assert "router" not in lease
    ipxe = udhcpc(client, tmp_path, "-x", "0x4d:" + b"iPXE".hex())
    assert ipxe["boot_file"] == "boot.ipxe"
    assert udhcpc(client, tmp_path, *UEFI_CLIENT)["boot_file"] == "shimx64.efi"
    assert udhcpc(other, tmp_path, *PXE_CLIENT) == {}  # never on another interface

    ns_run(client, "ip", "addr", "add", f"{lease['ip']}/24", "dev", "eth0")
    loader = ns_run(client, "curl", "-sf", "tftp://10.66.0.1/lpxelinux.0", "-o",
                    str(tmp_path / "got.0"))
    assert loader.returncode == 0
    assert (tmp_path / "got.0").read_bytes() == Path("/usr/lib/PXELINUX/lpxelinux.0").read_bytes()
    menu = ns_run(client, "curl", "-sf", "tftp://10.66.0.1/pxelinux.cfg/default").stdout
    assert "oar.role=node" in menu and "oar.server=10.66.0.1" in menu and "IPAPPEND 2" in menu
    assert "oar.keymap=fr" in menu
    ns_run(client, "curl", "-sf", "tftp://10.66.0.1/ldlinux.c32", "-o", "/dev/null")
    for name in pxe.SIGNED_LOADERS:  # shim, then the grub beside it and its menu
        ns_run(client, "curl", "-sf", f"tftp://10.66.0.1/{name}", "-o", str(tmp_path / name))
        assert (tmp_path / name).read_bytes() == (medium / "netboot" / name).read_bytes()
    grub = ns_run(client, "curl", "-sf", "tftp://10.66.0.1/grub/grub.cfg").stdout
    assert "source (http,10.66.0.1:6682)/grub-http.cfg" in grub and "oar.role=node" in grub
    snippet = ns_run(client, "curl", "-sf", "http://10.66.0.1:6682/grub-http.cfg").stdout
    assert snippet == "set oarlive_files=(http,10.66.0.1:6682)\n"
    ns_run(client, "curl", "-sf", "tftp://10.66.0.1/initrd.img", "-o", str(tmp_path / "i"))
    assert (tmp_path / "i").read_bytes() == (medium / "live/initrd.img").read_bytes()
    ns_run(client, "curl", "-sf", "http://10.66.0.1:6682/vmlinuz", "-o", str(tmp_path / "k"))
    assert (tmp_path / "k").read_bytes() == (medium / "live/vmlinuz").read_bytes()
    squash = ns_run(client, "curl", "-s", "-o", str(tmp_path / "s"), "-w", "%{http_code}",
                    "http://10.66.0.1:6682/filesystem.squashfs").stdout
    assert squash == "200"
    assert (tmp_path / "s").read_bytes() == (medium / "live/filesystem.squashfs").read_bytes()
    refused = ns_run(client, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                     "http://10.66.0.1:6682/plan.json", check=False).stdout
    assert refused == "404"
    leases = (state / "dnsmasq.leases").read_text()
    assert lease["ip"] in leases


@pytest.mark.integration
def test_beside_a_site_dhcp_server_the_service_is_a_proxy(lan, work):
    tmp_path = work
    site = lan.machine("site", "10.55.0.254/24")
    server = lan.machine("srv", "10.55.0.2/24")  # its lease from the site server
    client = lan.machine("cli")
    lan.start(site, ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
                     "--interface=eth0", "--bind-interfaces",
                     "--dhcp-range=10.55.0.100,10.55.0.120,255.255.255.0,1h",
                     f"--dhcp-leasefile={tmp_path / 'site.leases'}",
                     f"--pid-file={tmp_path / 'site.pid'}", "--user=nobody",
                     "--group=nogroup"], tmp_path / "site.log")
    fake_medium(tmp_path)
    setup, _ = setup_service(lan, server, tmp_path)
    assert "proxy-DHCP beside the DHCP server 10.55.0.254" in setup.stdout
    assert "mode=proxy address=10.55.0.2" in setup.stdout

    # A plain client gets its address from the site server, nothing from us.
    lease = udhcpc(client, tmp_path)
    assert lease["serverid"] == "10.55.0.254"
    # A PXE client hears both: the site's address and our boot service, then asks our boot
    # server (port 4011) for the file, as a PXE ROM does.
    ns_run(client, "ip", "addr", "add", f"{lease['ip']}/24", "dev", "eth0")
    probe = (
        "import sys; from boot.pxe import dhcpprobe as d; mac = d.random_mac()\n"
        "for o in d.discover('eth0', 5, mac=mac, vendor_class="
        "'PXEClient:Arch:00000:UNDI:002001', client_arch=0):\n"
        "    ack = None if o.gives_address else d.request_boot_file(sys.argv[1], o, mac)\n"
        "    print(o.server, o.yiaddr, ack.boot_file if ack else '-', ack.siaddr if ack else '-')"
    )
    out = ns_run(client, "env", f"PYTHONPATH={PROJECT}", sys.executable, "-c", probe,
                 lease["ip"]).stdout
    answers = {line.split()[0]: line.split()[1:] for line in out.splitlines()}
    assert answers["10.55.0.254"][0].startswith("10.55.0.1")  # the address, from the site
    assert answers["10.55.0.2"] == ["0.0.0.0", "lpxelinux.0", "10.55.0.2"]  # the boot file
    fetched = ns_run(client, "curl", "-sf", "tftp://10.55.0.2/lpxelinux.0", "-o", "/dev/null")
    assert fetched.returncode == 0


# ----------------------------------------------------------------------------- oar-vcluster --pxe


def test_vcluster_pxe_netboots_the_nodes_from_a_server_with_oar_pxe(tmp_path):
    from boot.vcluster import net as vnet
    from boot.vcluster import plan as vplan
    from boot.vcluster.state import ClusterState

    machines = vplan.plan_machines(2, [1], [1536], 1, 1024)
    server, node = machines[0], machines[1]
    assert "oar.pxe=1" in vplan.kernel_cmdline("boot=live", server, 2, pxe=True)
    assert "oar.pxe" not in vplan.kernel_cmdline("boot=live", server, 2)
    state = ClusterState(tmp_path, "oarvc-test", iso=str(tmp_path / "x.iso"), accel="tcg",
                         machines=machines)
    argv = vplan.vm_spec(state, node, tmp_path / "k", tmp_path / "i", "", netboot=True).argv()
    assert argv[argv.index("-boot") + 1].startswith("order=n,")
    assert "-kernel" not in argv and "-cdrom" not in argv and "media=cdrom" not in " ".join(argv)
    assert f"mac={node.mac}" in " ".join(argv)
    net = vnet.VirtualNetwork("oarvc-test", tmp_path)
    only_server = " ".join(net.dhcp_argv([(server.mac, server.address)], known_only=True))
    assert "--dhcp-ignore=tag:!known" in only_server and ",static," in only_server
    assert "--dhcp-ignore" not in " ".join(net.dhcp_argv([(server.mac, server.address)]))


# ----------------------------------------------------------------------------- the server role


def server_root(tmp_path: Path) -> Path:
    """What the server role reads, as tests/autoconf/test_server.py builds it."""
    from tests.autoconf.test_server import server_root as autoconf_server_root

    return autoconf_server_root(tmp_path, hosts="127.0.0.1 localhost\n")


def test_server_role_with_oar_pxe_serves_netboot_for_its_address(tmp_path, monkeypatch, capsys):
    from autoconf import server
    from autoconf.config import Config as AgentConfig
    from autoconf.config import Role
    from tests.autoconf.test_server import FakeSystem, server_detection

    root = server_root(tmp_path)
    fake_image(root)
    probed = []
    monkeypatch.setattr(dhcpprobe, "discover", lambda iface, seconds: probed.append(iface) or [])
    detection = server_detection()
    name = server.handle(AgentConfig(role=Role.SERVER, pxe=True), detection, root, FakeSystem())
    assert name == server.SERVER_HOSTNAME
    assert probed == [detection.interfaces[0].name]
    out = capsys.readouterr().out
    service = console.read_pxe(out)
    assert service is not None and (service.mode, service.network) == ("authoritative",
                                                                       "10.0.0.0/24")
    assert console.server_steps(out)["netboot service (PXE)"] == "changed"
    menu = (root / pxe.STATE_DIR / "tftp/pxelinux.cfg/default").read_text()
    assert "oar.server=10.0.0.1" in menu and "fetch=http://10.0.0.1:6682/" in menu


def test_server_role_without_boot_medium_reports_netboot_and_still_serves(tmp_path, monkeypatch,
                                                                          capsys):
    from autoconf import server
    from autoconf.config import Config as AgentConfig
    from autoconf.config import Role
    from tests.autoconf.test_server import FakeSystem, server_detection

    root = server_root(tmp_path)
    monkeypatch.setattr(dhcpprobe, "discover", lambda iface, seconds: [])
    system = FakeSystem()
    assert server.handle(AgentConfig(role=Role.SERVER, pxe=True), server_detection(), root,
                         system) == server.SERVER_HOSTNAME
    out = capsys.readouterr().out
    assert console.server_steps(out)["netboot service (PXE)"] == "FAILED"
    assert "not booted from an OAR Live" in out
    assert system.running["oar-server"]
