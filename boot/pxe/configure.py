"""The server's network boot service (`oar.pxe=1`): netboot other machines as OAR Live nodes.

From the files already on the server's boot medium (live/vmlinuz, live/initrd.img,
live/filesystem.squashfs under /run/live/medium) it serves, on the cluster network only:

- DHCP with dnsmasq: authoritative when no other DHCP server answers a probe there
  (boot.pxe.dhcpprobe), proxy-DHCP beside the site's server otherwise (the site gives addresses,
  we give the boot file); the console says which, and that no other interface is answered;
- TFTP: BIOS loaders (lpxelinux.0 + its .c32 modules and pxelinux.cfg/default) and UEFI ones:
  Debian's signed shim and network grub from the medium's netboot/ folder, with grub/grub.cfg
  and links to the kernel and initrd, so nodes that enforce Secure Boot netboot too, else
  iPXE's snponly.efi (Debian's ipxe); iPXE clients get boot.ipxe;
- HTTP (boot.pxe.serve): kernel, initrd, squashfs and boot.ipxe, read-only, nothing else.

The menus come from isolinux/menu.yaml through boot.menus, like the ISO's, and boot the `node`
entry after a few seconds with `oar.role=node oar.server=<server> oar.keymap=<server's>` and
live-boot's `fetch=http://<server>:6682/filesystem.squashfs`, so a node never prompts. The
pxelinux entries pass the boot MAC (IPAPPEND 2 -> BOOTIF), iPXE's too: the node's hostname is
node-<its MAC>.

The agent's server role calls `prepare()` (probe, mode, an address for the cluster interface
in authoritative mode when it has none) before it settles its own address, then `start()`
(files under /run/oar-live/pxe, oar-live-pxe.service). By hand, without the agent:

    python3 -m boot.pxe.configure setup --interface eth1 [--medium DIR] [--state DIR]
    python3 -m boot.pxe.serve [--state DIR]

boot.pxe.plan renders what is served (dnsmasq.conf, menus); boot.pxe.serve runs it.
Runs inside the image: standard library, PyYAML, Jinja2.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boot import console, netif, proc
from boot.files import write_if_changed
from boot.netif import Interface
from boot.pxe import dhcpprobe
from boot.pxe.plan import (  # noqa: F401 - the plan's names, for the agent and the tests
    BIOS_LOADER,
    HTTP_PORT,
    IPXE_SCRIPT,
    LOADERS,
    MENU_TIMEOUT,
    SIGNED_LOADERS,
    STATE_DIR,
    UEFI_LOADER,
    BootFiles,
    Mode,
    Plan,
    PxeError,
    boot_files,
    default_entry,
    dhcp_range,
    dnsmasq_conf,
    node_keys,
    render_menus,
)

__all__ = ["Mode", "Netboot", "Plan", "PxeError", "decide_mode", "dnsmasq_conf", "prepare",
           "start"]

MEDIUM = Path("run/live/medium")  # where live-boot mounted the boot medium
KERNEL_CMDLINE_FILE = Path("etc/oar-live/kernel-cmdline")  # written at build time
DEFAULT_KERNEL_CMDLINE = "boot=live systemd.unified_cgroup_hierarchy=0"
PROBE_SECONDS = 5.0  # dnsmasq pings an address ~3 s before offering it
DEFAULT_ADDRESS = ipaddress.IPv4Interface("10.66.0.1/24")  # authoritative, no address, no oar.net
UNIT = "oar-live-pxe.service"
NETWORKD_FILE = Path("run/systemd/network/10-oar-live-pxe-{interface}.network")

Runner = Callable[..., Any]
Probe = Callable[[str, float], list[dhcpprobe.Offer]]


@dataclass(frozen=True)
class Netboot:
    """What `prepare` decided: the cluster interface, the DHCP mode, the machine as it is now."""

    interface: Interface  # the cluster interface, with the address it has (or was given)
    mode: Mode
    other_dhcp: str | None


# ----------------------------------------------------------------------------- decisions


def cluster_interface(net: str | None, interfaces: Sequence[Interface]) -> Interface:
    """The one interface DHCP may be answered on: `oar.net` (an interface name or a network),
    else the machine's only one."""
    found = list(interfaces)
    if net and "/" not in net:
        chosen = [i for i in found if i.name == net]
        if not chosen:
            raise PxeError(f"oar.net={net}: no such interface (found: "
                           f"{', '.join(i.name for i in found) or 'none'})")
        return chosen[0]
    if net:
        network = ipaddress.ip_network(net, strict=False)
        inside = [i for i in found
                  if any(ipaddress.ip_interface(a).ip in network for a in i.addresses
                         if ipaddress.ip_interface(a).version == network.version)]
        if len(inside) == 1:
            return inside[0]
        if len(found) == 1:
            return found[0]  # its address comes in authoritative mode
        raise PxeError(f"oar.net={net}: {len(inside)} interfaces in that network; "
                       "name the interface instead (oar.net=<interface>)")
    if len(found) == 1:
        return found[0]
    raise PxeError("oar.pxe=1 on a machine with several interfaces "
                   f"({', '.join(i.name for i in found) or 'none'}): say which one is the "
                   "cluster network with oar.net=<interface> (DHCP is answered there only)")


def decide_mode(offers: list[dhcpprobe.Offer], own: set[str]
                ) -> tuple[Mode, dhcpprobe.Offer | None]:
    """Proxy when a DHCP server other than this machine offers addresses, else authoritative."""
    others = dhcpprobe.other_dhcp_servers(offers, own)
    return (Mode.PROXY, others[0]) if others else (Mode.AUTHORITATIVE, None)


def static_address(net: str | None) -> ipaddress.IPv4Interface:
    """The address the server takes in authoritative mode when it has none."""
    if net and "/" in net:
        network = ipaddress.ip_network(net, strict=False)
        if isinstance(network, ipaddress.IPv4Network) and network.num_addresses >= 4:
            return ipaddress.IPv4Interface(f"{next(network.hosts())}/{network.prefixlen}")
    return DEFAULT_ADDRESS


def ipv4_of(interface: Interface) -> list[ipaddress.IPv4Interface]:
    return [a for a in map(ipaddress.ip_interface, interface.addresses)
            if isinstance(a, ipaddress.IPv4Interface)]


# ----------------------------------------------------------------------------- actions


def _say(text: str) -> None:
    print(text, flush=True)


def _tell(message: str) -> None:
    _say(console.info(message, "PXE"))


def _current_ipv4(interface: str, run: Runner) -> list[ipaddress.IPv4Interface]:
    out = run(["ip", "-4", "-o", "addr", "show", "dev", interface], timeout=10).stdout
    found = []
    for line in out.splitlines():
        words = line.split()
        if "inet" in words:
            found.append(ipaddress.IPv4Interface(words[words.index("inet") + 1]))
    return found


def networkd_runs(root: Path) -> bool:
    """systemd is init and systemd-networkd manages the links (the live image)."""
    return (root / "run/systemd/system").is_dir() and (root / "run/systemd/netif").is_dir()


def _give_address(interface: str, address: ipaddress.IPv4Interface, root: Path,
                  run: Runner, networkd: bool) -> None:
    """The cluster interface takes `address` (through systemd-networkd when it manages links,
    so that it keeps it, else with `ip`)."""
    if networkd and shutil.which("networkctl"):
        path = root / str(NETWORKD_FILE).format(interface=interface)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "# Written by OAR Live's netboot service: the cluster network has no DHCP server,\n"
            "# this server answers DHCP there with this fixed address.\n"
            f"[Match]\nName={interface}\n\n[Network]\nAddress={address}\n"
            "LinkLocalAddressing=no\nIPv6AcceptRA=no\nConfigureWithoutCarrier=yes\n"
        )
        run(["networkctl", "reload"], timeout=30)
        run(["networkctl", "reconfigure", interface], timeout=30)
    else:
        run(["ip", "link", "set", interface, "up"], timeout=10)
        run(["ip", "addr", "replace", str(address), "dev", interface], timeout=10)


def _wait_address(interface: str, run: Runner, seconds: float,
                  wanted: ipaddress.IPv4Interface | None = None
                  ) -> list[ipaddress.IPv4Interface]:
    deadline = time.monotonic() + seconds
    while True:
        found = _current_ipv4(interface, run)
        if found and (wanted is None or wanted in found):
            return found
        if time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def prepare(net: str | None, interfaces: Sequence[Interface], root: Path = Path("/"),
            run: Runner = proc.run, probe: Probe | None = None, networkd: bool | None = None
            ) -> Netboot:
    """Probe DHCP on the cluster interface, choose the mode and make sure the interface has an
    IPv4 address (in authoritative mode, one we give it; in proxy mode, the site's lease)."""
    iface = cluster_interface(net, interfaces)
    own = {str(a.ip) for i in interfaces for a in ipv4_of(i)}
    _tell(f"looking for another DHCP server on {iface.name} ({PROBE_SECONDS:g} s)")
    try:
        offers = (probe or dhcpprobe.discover)(iface.name, PROBE_SECONDS)
    except dhcpprobe.ProbeError as exc:
        raise PxeError(f"cannot probe DHCP on {iface.name}: {exc}") from None
    mode, other = decide_mode(offers, own)
    addresses = ipv4_of(iface)
    if not addresses:
        if mode is Mode.AUTHORITATIVE:
            wanted = static_address(net)
            _tell(f"{iface.name} has no address: taking {wanted}")
            if networkd is None:
                networkd = networkd_runs(root)
            _give_address(iface.name, wanted, root, run, networkd)
            addresses = _wait_address(iface.name, run, 20, wanted)
        else:
            addresses = _wait_address(iface.name, run, 30)
        if not addresses:
            raise PxeError(f"{iface.name} has no IPv4 address: cannot serve netboot there")
    updated = dataclasses.replace(
        iface, addresses=tuple(dict.fromkeys([*map(str, addresses), *iface.addresses])))
    return Netboot(updated, mode, other.server if other else None)


def write_state(plan: Plan, state: Path, root: Path = Path("/"), base_cmdline: str = "") -> bool:
    """plan.json, dnsmasq.conf and the TFTP tree (loaders and menus); True when anything
    changed."""
    tftp = state / "tftp"
    changed = False
    for source, name in LOADERS:
        path = root / source
        if not path.is_file():
            raise PxeError(f"{path} is missing: install pxelinux, syslinux-common and ipxe")
        changed |= write_if_changed(tftp / name, path.read_bytes())
    if plan.files.signed_loaders:
        for name in SIGNED_LOADERS:
            changed |= write_if_changed(tftp / name,
                                        (plan.files.signed_loaders / name).read_bytes())
        # the signed grub loads the kernel and initrd over TFTP: links to the medium's files
        for name, target in (("vmlinuz", plan.files.kernel), ("initrd.img", plan.files.initrd)):
            changed |= _link(tftp / name, target)
    for name, text in render_menus(plan, base_cmdline).items():
        changed |= write_if_changed(tftp / name, text.encode())
    changed |= write_if_changed(state / "dnsmasq.conf", dnsmasq_conf(plan, state).encode())
    text = json.dumps(plan.to_json(), indent=2, sort_keys=True) + "\n"
    changed |= write_if_changed(state / "plan.json", text.encode())
    for folder in (tftp, *(f for f in (tftp / "pxelinux.cfg", tftp / "grub") if f.is_dir())):
        folder.chmod(0o755)
    return changed


def _link(path: Path, target: Path) -> bool:
    """`path` a symbolic link to `target`; True when it had to change."""
    if path.is_symlink() and Path(os.readlink(path)) == target:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    path.symlink_to(target)
    return True


def base_cmdline(root: Path) -> str:
    try:
        return (root / KERNEL_CMDLINE_FILE).read_text().strip() or DEFAULT_KERNEL_CMDLINE
    except OSError:
        return DEFAULT_KERNEL_CMDLINE


def start(netboot: Netboot, address: ipaddress.IPv4Interface,
          keys: tuple[tuple[str, str], ...], cmdline: str,
          root: Path = Path("/"), run: Runner = proc.run) -> tuple[bool, str]:
    """Write the service's files and (re)start oar-live-pxe.service when they changed.

    `keys` are the `oar.*` keys every netbooted node gets besides its role and server
    (`node_keys()` of boot.pxe.plan), `cmdline` the server's own kernel line.
    Returns (changed, a short description) for the server role's console line.
    """
    plan = Plan(
        interface=netboot.interface.name,
        address=address,
        mode=netboot.mode,
        files=boot_files(root / MEDIUM),
        node_keys=keys,
        default_entry=default_entry(cmdline),
        other_dhcp=netboot.other_dhcp,
    )
    _say(plan.announce())
    state = root / STATE_DIR
    changed = write_state(plan, state, root, base_cmdline(root))
    detail = f"{plan.mode.value} on {plan.interface}"
    if not (root / "run/systemd/system").is_dir():
        _tell(f"no systemd here: run `python3 -m boot.pxe.serve --state {state}`")
        return changed, detail
    active = run(["systemctl", "is-active", "--quiet", UNIT], check=False, timeout=30)
    if active.returncode == 0 and not changed:
        return False, detail
    run(["systemctl", "restart", UNIT], timeout=60)
    return True, detail


# ----------------------------------------------------------------------------- by hand


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m boot.pxe.configure",
                                     description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    setup = sub.add_parser("setup", help="probe DHCP, choose the mode, write the service files")
    setup.add_argument("--interface", required=True, help="the cluster network interface")
    setup.add_argument("--medium", type=Path, default=Path("/") / MEDIUM,
                       help="folder holding live/vmlinuz, initrd.img, filesystem.squashfs")
    setup.add_argument("--state", type=Path, default=Path("/") / STATE_DIR)
    setup.add_argument("--keymap", default="us")
    setup.add_argument("--http-port", type=int, default=HTTP_PORT)
    setup.add_argument("--serial", action="store_true",
                       help="nodes boot with their console on the first serial port")
    args = parser.parse_args(argv)
    found = [i for i in netif.interfaces() if i.name == args.interface]
    if not found:
        print(f"boot.pxe.configure: no interface {args.interface}", file=sys.stderr)
        return 2
    try:
        netboot = prepare(args.interface, found, networkd=False)  # by hand: `ip` only
        plan = Plan(args.interface, ipv4_of(netboot.interface)[0], netboot.mode,
                    boot_files(args.medium),
                    args.http_port, (("oar.keymap", args.keymap),),
                    "node-serial" if args.serial else "node", netboot.other_dhcp)
        _say(plan.announce())
        write_state(plan, args.state, Path("/"), base_cmdline(Path("/")))
    except (PxeError, proc.CommandError) as exc:
        print(f"boot.pxe.configure: {exc}", file=sys.stderr)
        return 1
    print(f"mode={plan.mode.value} address={plan.address.ip} state={args.state}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
