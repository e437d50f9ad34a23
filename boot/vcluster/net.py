"""The virtual cluster's private network: a network namespace of its own with a bridge, one tap
per VM and a DHCP server, so the VMs see an ordinary LAN and nothing touches the host's network.

Everything lives in a namespace `oarvc-<id>` created here (`ip netns add`) and removed with it
(`ip netns del` takes the bridge and the taps along): the host's interfaces, routes and
firewall are never touched, and no packet can leave the machine. The host side of the bridge
(10.77.0.1) serves DHCP with fixed leases (dnsmasq, no DNS, no default route) so every VM gets
a predictable address; the launcher reaches the VMs by running `ssh` inside the namespace.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from boot.proc import run

NETNS_DIR = Path("/run/netns")
NETNS_PREFIX = "oarvc-"
SUBNET = ipaddress.IPv4Network("10.77.0.0/24")
HOST_ADDRESS = ipaddress.IPv4Address("10.77.0.1")  # the bridge: DHCP server, ssh client side
SERVER_ADDRESS = ipaddress.IPv4Address("10.77.0.2")
FIRST_NODE_ADDRESS = 11  # node i (1-based) gets 10.77.0.(10 + i)
BRIDGE = "br0"


def new_netns_name() -> str:
    return NETNS_PREFIX + secrets.token_hex(4)


def mac_address(index: int) -> str:
    """VM `index` (0 = server, i = node i): a locally administered qemu MAC, 52:54:00:4f:4c:ii."""
    if not 0 <= index <= 0xFF:
        raise ValueError(f"VM index {index} out of range 0-255")
    return f"52:54:00:4f:4c:{index:02x}"


def ip_address(index: int) -> str:
    """The fixed DHCP lease of VM `index` (0 = server)."""
    if index == 0:
        return str(SERVER_ADDRESS)
    if not 1 <= index <= 200:
        raise ValueError(f"node index {index} out of range 1-200")
    return str(SUBNET.network_address + 10 + index)


def oar_hostname(mac: str) -> str:
    """The name the agent gives a node: node- and the 12 hex digits of its boot MAC."""
    return "node-" + mac.replace(":", "").lower()


def tap_name(index: int) -> str:
    return f"tap{index}"


@dataclass(frozen=True)
class VirtualNetwork:
    """One private LAN: its namespace name and the files its DHCP server keeps."""

    netns: str
    state_dir: Path

    @property
    def netns_path(self) -> Path:
        return NETNS_DIR / self.netns

    def exists(self) -> bool:
        return self.netns_path.exists()

    def inside(self, argv: list[str]) -> list[str]:
        """`argv` run in the namespace (what qemu, dnsmasq and ssh are started with)."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def create(self) -> None:
        """The namespace with loopback and the bridge up, the host side at 10.77.0.1."""
        if not self.exists():
            run(["ip", "netns", "add", self.netns])
        ns = ["ip", "-n", self.netns]
        run([*ns, "link", "set", "lo", "up"])
        if run([*ns, "link", "show", BRIDGE], check=False).returncode != 0:
            run([*ns, "link", "add", BRIDGE, "type", "bridge"])
            run([*ns, "addr", "add", f"{HOST_ADDRESS}/{SUBNET.prefixlen}", "dev", BRIDGE])
        run([*ns, "link", "set", BRIDGE, "up"])

    def add_tap(self, index: int) -> str:
        """A tap device on the bridge for VM `index`; qemu opens it by name."""
        name = tap_name(index)
        ns = ["ip", "-n", self.netns]
        if run([*ns, "link", "show", name], check=False).returncode != 0:
            run([*ns, "tuntap", "add", "dev", name, "mode", "tap"])
            run([*ns, "link", "set", name, "master", BRIDGE])
        run([*ns, "link", "set", name, "up"])
        return name

    def dhcp_argv(self, leases: list[tuple[str, str]], known_only: bool = False) -> list[str]:
        """dnsmasq in the foreground, DHCP only, a fixed address for every (mac, ip).

        `known_only`: no address for any other machine (`oar-vcluster up --pxe`: the OAR Live
        server then finds no other DHCP server for new machines and serves them itself).
        """
        if known_only:
            pool = [f"--dhcp-range={SUBNET.network_address},static,{SUBNET.netmask},12h",
                    "--dhcp-ignore=tag:!known"]
        else:
            pool = [f"--dhcp-range={SUBNET.network_address + 100},{SUBNET.network_address + 250},"
                    f"{SUBNET.netmask},12h"]
        argv = [
            "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
            f"--interface={BRIDGE}", "--bind-interfaces", "--user=root", *pool,
            "--dhcp-option=3", "--dhcp-option=6",  # no router, no DNS: the LAN is closed
            "--dhcp-authoritative",
            f"--dhcp-leasefile={self.state_dir / 'dnsmasq.leases'}",
            f"--pid-file={self.state_dir / 'dnsmasq.pid'}",
            f"--log-facility={self.state_dir / 'dnsmasq.log'}", "--log-dhcp",
        ]  # fmt: skip
        argv += [f"--dhcp-host={mac},{ip}" for mac, ip in leases]
        return self.inside(argv)

    def delete(self) -> bool:
        """Remove the namespace (and its bridge and taps); False when it was not there."""
        if not self.exists():
            return False
        run(["ip", "netns", "del", self.netns])
        return True
