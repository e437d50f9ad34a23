"""What the netboot service serves: its plan, dnsmasq's configuration and the nodes' menus.

A `Plan` says which interface and address, which DHCP mode and which files; from it come
dnsmasq.conf (DHCP or proxy-DHCP, and TFTP, on that interface only) and the menus rendered by
boot.menus from isolinux/menu.yaml (pxelinux.cfg/default and boot.ipxe) that boot a node with
`oar.role=node oar.server=<server>` and live-boot's `fetch=` of the squashfs.
boot.pxe.configure decides and writes the plan; boot.pxe.serve runs it.

Runs inside the image: standard library, PyYAML, Jinja2.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from boot import console, menus

__all__ = ["BootFiles", "Mode", "Plan", "PxeError", "boot_files", "dhcp_range", "dnsmasq_conf",
           "render_menus"]

STATE_DIR = Path("run/oar-live/pxe")  # under the root
HTTP_PORT = 6682  # registration 6680, beacon 6681
MENU_TIMEOUT = 3  # seconds a netbooting machine shows its menu before booting `node`

# Loaders served over TFTP: (source in the image, name in the TFTP root)
PXELINUX = Path("usr/lib/PXELINUX")
SYSLINUX_BIOS = Path("usr/lib/syslinux/modules/bios")
IPXE = Path("usr/lib/ipxe")
LOADERS = (
    (PXELINUX / "lpxelinux.0", "lpxelinux.0"),  # pxelinux with HTTP: kernel and initrd by HTTP
    (PXELINUX / "pxelinux.0", "pxelinux.0"),
    *((SYSLINUX_BIOS / m, m) for m in ("ldlinux.c32", "menu.c32", "libutil.c32", "libcom32.c32")),
    (IPXE / "snponly.efi", "snponly.efi"),  # UEFI: iPXE on the firmware's network driver
    (IPXE / "ipxe.efi", "ipxe.efi"),
)
BIOS_LOADER, UEFI_LOADER, IPXE_SCRIPT = "lpxelinux.0", "snponly.efi", "boot.ipxe"
# UEFI nodes, Secure Boot on or off, when the medium carries Debian's signed loaders (its
# netboot/ folder, export_iso): the firmware starts shim over TFTP, shim the network grub
# beside it (grubx64.efi), grub reads its menu from its prefix (tftp,server)/grub and loads
# Debian's signed kernel and the initrd from the HTTP service where it can name a port (GRUB
# 2.12, trixie: the GRUB_HTTP snippet it sources from there says so), else by TFTP (GRUB 2.06,
# bookworm: its `source` fails, the TFTP default stays; TFTP is ~10 times slower under
# emulation). iPXE (snponly.efi) is not signed.
SIGNED_LOADERS = ("shimx64.efi", "grubx64.efi", "mmx64.efi")
SIGNED_UEFI_LOADER, GRUB_MENU, GRUB_HTTP = "shimx64.efi", "grub/grub.cfg", "grub-http.cfg"
GRUB_FILES = "${oarlive_files}"  # the menu's entries load $GRUB_FILES/vmlinuz and initrd.img


class PxeError(Exception):
    """The netboot service cannot be set up; the message says why and what to do."""


class Mode(StrEnum):
    AUTHORITATIVE = "authoritative"  # we give addresses (nobody else answers DHCP there)
    PROXY = "proxy"  # the site's DHCP gives addresses, we give the boot file


@dataclass(frozen=True)
class BootFiles:
    """What nodes boot: the server's own kernel, initrd and squashfs."""

    kernel: Path
    initrd: Path
    squashfs: Path
    signed_loaders: Path | None = None  # the folder holding SIGNED_LOADERS, if the medium has it

    def served(self) -> dict[str, Path]:
        """URL name -> file, everything the HTTP service may send besides boot.ipxe."""
        return {"vmlinuz": self.kernel, "initrd.img": self.initrd,
                "filesystem.squashfs": self.squashfs}


def boot_files(medium: Path) -> BootFiles:
    """The live system's files on the boot medium, or why they are not there."""
    found = BootFiles(medium / "live/vmlinuz", medium / "live/initrd.img",
                      medium / "live/filesystem.squashfs")
    missing = [str(p) for p in (found.kernel, found.initrd, found.squashfs) if not p.is_file()]
    if missing:
        raise PxeError(f"cannot netboot nodes: {', '.join(missing)} missing (this machine was "
                       "not booted from an OAR Live ISO or USB stick)")
    signed = medium / "netboot"
    if all((signed / name).is_file() for name in SIGNED_LOADERS):
        found = dataclasses.replace(found, signed_loaders=signed)
    return found


@dataclass(frozen=True)
class Plan:
    """Everything the service needs; written to plan.json for boot.pxe.serve."""

    interface: str
    address: ipaddress.IPv4Interface  # the server on the cluster network
    mode: Mode
    files: BootFiles
    http_port: int = HTTP_PORT
    node_keys: tuple[tuple[str, str], ...] = ()  # oar.* keys every node boots with
    default_entry: str = "node"
    other_dhcp: str | None = None  # the DHCP server that answered the probe (proxy mode)

    def url(self, name: str) -> str:
        return f"http://{self.address.ip}:{self.http_port}/{name}"

    def grub_preamble(self) -> str:
        """The lines before the served grub menu that choose where its files come from."""
        return (f"# The kernel and initrd by HTTP where this GRUB can name a port (2.12), else by "
                f"TFTP (2.06).\nset oarlive_files=(tftp,{self.address.ip})\n"
                f"source (http,{self.address.ip}:{self.http_port})/{GRUB_HTTP}\n")

    def grub_http(self) -> str:
        """The snippet GRUB 2.12 sources from the HTTP service: its files come from there."""
        return f"set oarlive_files=(http,{self.address.ip}:{self.http_port})\n"

    @property
    def uefi_loader(self) -> str:
        """What UEFI firmware that netboots gets: signed shim when the medium has it."""
        return SIGNED_UEFI_LOADER if self.files.signed_loaders else UEFI_LOADER

    def to_json(self) -> dict[str, Any]:
        return {
            "interface": self.interface, "address": str(self.address), "mode": self.mode.value,
            "files": {k: str(v) for k, v in dataclasses.asdict(self.files).items()
                      if v is not None},
            "http_port": self.http_port, "node_keys": [list(k) for k in self.node_keys],
            "default_entry": self.default_entry, "other_dhcp": self.other_dhcp,
        }  # fmt: skip

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(
            interface=data["interface"],
            address=ipaddress.IPv4Interface(data["address"]),
            mode=Mode(data["mode"]),
            files=BootFiles(**{k: Path(v) for k, v in data["files"].items()}),
            http_port=int(data["http_port"]),
            node_keys=tuple((k, v) for k, v in data["node_keys"]),
            default_entry=data["default_entry"],
            other_dhcp=data.get("other_dhcp"),
        )

    def announce(self) -> str:
        """The console line that says what is served where, and where nothing is."""
        authoritative = self.mode is Mode.AUTHORITATIVE
        return console.pxe_announce(console.PxeService(
            self.mode.value, self.interface, f"{self.address.ip}:{self.http_port}",
            network=str(self.address.network) if authoritative else None,
            other_dhcp=None if authoritative else self.other_dhcp))


def dhcp_range(address: ipaddress.IPv4Interface) -> tuple[str, str]:
    """The addresses handed to nodes: the upper half of the subnet, minus the server's own."""
    hosts = [h for h in address.network.hosts() if h != address.ip]
    if not hosts:
        raise PxeError(f"{address.network} has no address left for nodes")
    upper = hosts[len(hosts) // 2 :] if len(hosts) >= 8 else hosts
    if address.ip in address.network and upper[0] < address.ip < upper[-1]:
        upper = [h for h in upper if h > address.ip]
    return str(upper[0]), str(upper[-1])


def dnsmasq_conf(plan: Plan, state: Path) -> str:
    """dnsmasq's whole configuration: DHCP (or proxy-DHCP) and TFTP on one interface, no DNS."""
    net = plan.address.network
    lines = [
        "# OAR Live netboot service (boot/pxe/configure.py). DHCP and TFTP on the cluster "
        "interface only.",
        "port=0",  # no DNS
        f"interface={plan.interface}",
        "bind-interfaces",
        "except-interface=lo",
        f"pid-file={state / 'dnsmasq.pid'}",
        f"dhcp-leasefile={state / 'dnsmasq.leases'}",
        "user=nobody",
        "group=nogroup",
        "log-dhcp",
        "enable-tftp",
        f"tftp-root={state / 'tftp'}",
        "dhcp-userclass=set:ipxe,iPXE",  # iPXE (qemu's ROM, or chained from snponly.efi)
        "dhcp-match=set:efi64,option:client-arch,7",
        "dhcp-match=set:efi64,option:client-arch,9",
    ]
    if plan.mode is Mode.AUTHORITATIVE:
        first, last = dhcp_range(plan.address)
        lines += [
            f"dhcp-range={first},{last},{net.netmask},1h",
            "dhcp-authoritative",
            "dhcp-option=option:router",  # no gateway and no DNS: the cluster network only
            "dhcp-option=option:dns-server",
            f"dhcp-boot=tag:ipxe,{IPXE_SCRIPT},,{plan.address.ip}",
            f"dhcp-boot=tag:!ipxe,tag:efi64,{plan.uefi_loader},,{plan.address.ip}",
            f"dhcp-boot=tag:!ipxe,tag:!efi64,{BIOS_LOADER},,{plan.address.ip}",
        ]
    else:
        lines += [
            f"dhcp-range={net.network_address},proxy,{net.netmask}",
            f'pxe-service=tag:ipxe,x86PC,"OAR Live",{IPXE_SCRIPT}',
            f'pxe-service=tag:!ipxe,x86PC,"OAR Live",{BIOS_LOADER}',
            f'pxe-service=tag:ipxe,X86-64_EFI,"OAR Live",{IPXE_SCRIPT}',
            f'pxe-service=tag:!ipxe,X86-64_EFI,"OAR Live",{plan.uefi_loader}',
            f'pxe-service=tag:ipxe,BC_EFI,"OAR Live",{IPXE_SCRIPT}',
            f'pxe-service=tag:!ipxe,BC_EFI,"OAR Live",{plan.uefi_loader}',
        ]
    return "\n".join(lines) + "\n"


def node_cmdline(base: str, plan: Plan) -> str:
    """The kernel line shared by every served entry: the image's, plus the node's answers."""
    keys = " ".join(f"{k}={v}" for k, v in plan.node_keys)
    return " ".join(p for p in (base, keys) if p)


def render_menus(plan: Plan, base_cmdline: str) -> dict[str, str]:
    """The served menus (name in the TFTP root -> text), booting `node` with oar.server set."""
    common = dict(
        cmdline=node_cmdline(base_cmdline, plan),
        fetch=plan.url("filesystem.squashfs"),
        server=str(plan.address.ip),
        default=plan.default_entry,
        timeout=MENU_TIMEOUT,
    )
    try:
        rendered = {
            "pxelinux.cfg/default": menus.render(
                menus.Target.PXELINUX, plan.url("vmlinuz"), plan.url("initrd.img"), **common),
            IPXE_SCRIPT: menus.render(
                menus.Target.IPXE, plan.url("vmlinuz"), plan.url("initrd.img"), **common),
        }
        if plan.files.signed_loaders:
            rendered[GRUB_MENU] = plan.grub_preamble() + menus.render(
                menus.Target.GRUB, f"{GRUB_FILES}/vmlinuz", f"{GRUB_FILES}/initrd.img",
                **common)
            rendered[GRUB_HTTP] = plan.grub_http()
        return rendered
    except menus.MenuError as exc:
        raise PxeError(f"cannot render the netboot menus: {exc}") from None


def node_keys(keymap: str, token: str, token_in_image: bool) -> tuple[tuple[str, str], ...]:
    """What nodes are told on their kernel line besides role and server: the server's keymap,
    and its token when it did not come with the image (nodes boot the same image)."""
    keys = [("oar.keymap", keymap or "us")]
    if token and not token_in_image:
        keys.append(("oar.token", token))
    return tuple(keys)


def default_entry(cmdline: str) -> str:
    """Nodes show their console where the server does: `node-serial` when the server's
    last console= is a serial port, else `node` (the screen)."""
    consoles = [w.split("=", 1)[1] for w in cmdline.split() if w.startswith("console=")]
    return "node-serial" if consoles and consoles[-1].startswith("ttyS") else "node"
