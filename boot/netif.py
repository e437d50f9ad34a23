"""The machine's network interfaces, read through a root prefix: name, MAC, addresses.

Shared by the agent's detection (autoconf.detect) and the server's netboot service (boot.pxe),
which must agree on what an interface is. Names and MACs come from root/sys/class/net; the
addresses come from netlink (netifaces, psutil as a fallback) on the real root ("/"), and in a
fake root from sys/class/net/<if>/test_addresses (one CIDR a line), a file only fake trees have.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NET_DIR = Path("sys/class/net")
FAKE_ADDRESSES = "test_addresses"
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
IFNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,14}$")  # the kernel's IFNAMSIZ is 16
_NO_MAC = "00:00:00:00:00:00"


@dataclass(frozen=True)
class Interface:
    name: str
    mac: str
    addresses: tuple[str, ...]  # "10.0.0.5/24", IPv4 first


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def normal_mac(text: str | None) -> str | None:
    if text is None:
        return None
    mac = text.strip().lower()
    return mac if MAC_RE.match(mac) and mac != _NO_MAC else None


def _real_addresses(name: str) -> tuple[str, ...]:
    """Addresses of a host interface from netlink, via netifaces (psutil as a fallback)."""
    found: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = []
    try:
        import netifaces

        groups = netifaces.ifaddresses(name)
        entries = [(e.get("addr"), e.get("netmask"))
                   for family in (netifaces.AF_INET, netifaces.AF_INET6)
                   for e in groups.get(family, [])]
    except (ImportError, ValueError):
        try:
            import psutil
        except ImportError:
            return ()
        entries = [(a.address, a.netmask) for a in psutil.net_if_addrs().get(name, [])]
    for addr, mask in entries:
        if not addr or not mask:
            continue
        addr = addr.split("%")[0]
        mask = mask.split("/")[-1] if "/" in mask else mask
        try:
            iface = ipaddress.ip_interface(f"{addr}/{mask}")
        except ValueError:
            continue
        found.append(iface)
    return _ordered(found)


def _ordered(found: list[Any]) -> tuple[str, ...]:
    usable = [i for i in found if not i.ip.is_link_local]
    usable.sort(key=lambda i: i.version)  # IPv4 first, kernel order otherwise
    return tuple(dict.fromkeys(str(i) for i in usable))


def _fake_addresses(path: Path) -> tuple[str, ...]:
    found = []
    for line in (_read(path) or "").splitlines():
        try:
            found.append(ipaddress.ip_interface(line.strip()))
        except ValueError:
            continue
    return _ordered(found)


def interfaces(root: Path = Path("/")) -> tuple[Interface, ...]:
    """Interfaces with a MAC address (not lo), physical ones first, each group by name."""
    net = root / NET_DIR
    try:
        entries = sorted(net.iterdir())
    except OSError:
        return ()
    real_root = root.resolve() == Path("/")
    found = []
    for entry in entries:
        mac = normal_mac(_read(entry / "address"))
        if entry.name == "lo" or mac is None:
            continue
        if real_root:
            addresses = _real_addresses(entry.name)
        else:
            addresses = _fake_addresses(entry / FAKE_ADDRESSES)
        physical = (entry / "device").exists()
        found.append((not physical, entry.name, Interface(entry.name, mac, addresses)))
    found.sort(key=lambda item: item[:2])
    return tuple(item[2] for item in found)
