"""Ask a network whether a DHCP server already answers there: one DHCPDISCOVER, collect offers.

The PXE service uses it to choose between serving addresses itself (nobody else answers) and
proxy-DHCP beside the site's DHCP server. The probe is a client only: it sends one DISCOVER
(broadcast flag set, so servers broadcast their OFFER back) from a packet socket bound to the
given interface, reads the answers for a few seconds and never requests or accepts a lease.
It speaks for a machine the network has never seen (a random locally administered MAC), which
is what a netbooting node is: a DHCP server that answers only known machines does not count.

    python3 -m boot.pxe.dhcpprobe eth1 [--seconds 4] [--vendor-class PXEClient:...]

Runs inside the image: standard library only; needs root (CAP_NET_RAW).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass, field

ETH_P_IP = 0x0800
BROADCAST_MAC = b"\xff" * 6
MAGIC_COOKIE = b"\x63\x82\x53\x63"
CLIENT_PORT, SERVER_PORT = 68, 67

# DHCP message types (option 53) and the options read or sent here.
DISCOVER, OFFER = 1, 2
OPT_SUBNET, OPT_ROUTER, OPT_SERVER_ID, OPT_MESSAGE_TYPE = 1, 3, 54, 53
OPT_PARAMS, OPT_VENDOR_CLASS, OPT_TFTP_SERVER, OPT_BOOTFILE = 55, 60, 66, 67
OPT_VENDOR_SPECIFIC, OPT_USER_CLASS, OPT_CLIENT_ARCH, OPT_CLIENT_NDI = 43, 77, 93, 94
OPT_CLIENT_UUID, OPT_END, OPT_PAD = 97, 255, 0

__all__ = ["Offer", "ProbeError", "discover", "other_dhcp_servers", "random_mac",
           "request_boot_file"]


class ProbeError(Exception):
    """The probe could not run on that interface (missing, down, not permitted)."""


@dataclass(frozen=True)
class Offer:
    """One DHCPOFFER as the probe saw it."""

    server_id: str | None  # option 54: the answering server
    source: str  # IP source address of the packet
    yiaddr: str  # the address offered ("0.0.0.0" from a proxy-DHCP: no address)
    siaddr: str  # next-server
    boot_file: str  # the `file` field, else option 67
    vendor_class: str = ""  # option 60 (a proxy-DHCP answers "PXEClient")
    options: dict[int, bytes] = field(default_factory=dict, compare=False, repr=False)

    @property
    def gives_address(self) -> bool:
        return self.yiaddr != "0.0.0.0"

    @property
    def server(self) -> str:
        return self.server_id or self.source


def random_mac() -> bytes:
    """A unicast, locally administered MAC no real machine has."""
    mac = bytearray(os.urandom(6))
    mac[0] = (mac[0] & 0xFC) | 0x02
    return bytes(mac)


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _option(code: int, value: bytes) -> bytes:
    return bytes([code, len(value)]) + value


def build_discover(
    xid: int,
    mac: bytes,
    vendor_class: str | None = None,
    user_class: str | None = None,
    client_arch: int | None = None,
) -> bytes:
    """A DHCPDISCOVER (BOOTP payload only) asking for the boot options too."""
    header = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s",
        1, 1, 6, 0, xid, 0, 0x8000,  # BOOTREQUEST, Ethernet, broadcast flag
        b"\0" * 4, b"\0" * 4, b"\0" * 4, b"\0" * 4, mac.ljust(16, b"\0"), b"", b"",
    )  # fmt: skip
    options = _option(OPT_MESSAGE_TYPE, bytes([DISCOVER]))
    options += _option(OPT_PARAMS, bytes([OPT_SUBNET, OPT_ROUTER, OPT_SERVER_ID, OPT_VENDOR_CLASS,
                                          OPT_TFTP_SERVER, OPT_BOOTFILE, OPT_VENDOR_SPECIFIC]))
    if vendor_class:
        options += _option(OPT_VENDOR_CLASS, vendor_class.encode())
    if user_class:
        options += _option(OPT_USER_CLASS, user_class.encode())
    if client_arch is not None:  # a PXE client: architecture, network interface, UUID
        options += _option(OPT_CLIENT_ARCH, struct.pack("!H", client_arch))
        options += _option(OPT_CLIENT_NDI, bytes([1, 2, 1]))
        options += _option(OPT_CLIENT_UUID, b"\0" + os.urandom(16))
    payload = header + MAGIC_COOKIE + options + bytes([OPT_END])
    return payload.ljust(300, bytes([OPT_PAD]))


def wrap_udp(payload: bytes) -> bytes:
    """IPv4 + UDP headers around a DHCP payload, 0.0.0.0:68 -> 255.255.255.255:67."""
    udp = struct.pack("!HHHH", CLIENT_PORT, SERVER_PORT, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0x10, 20 + len(udp), 0, 0, 64, socket.IPPROTO_UDP, 0,
        b"\0" * 4, b"\xff" * 4,
    )  # fmt: skip
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return ip + udp


def parse_options(data: bytes) -> dict[int, bytes]:
    options: dict[int, bytes] = {}
    i = 0
    while i < len(data):
        code = data[i]
        if code == OPT_END:
            break
        if code == OPT_PAD:
            i += 1
            continue
        if i + 1 >= len(data):
            break
        length = data[i + 1]
        options[code] = options.get(code, b"") + data[i + 2 : i + 2 + length]
        i += 2 + length
    return options


def parse_bootp(bootp: bytes, xid: int, source: str, message_type: int = OFFER
                ) -> Offer | None:
    """A BOOTREPLY of `message_type` for transaction `xid`, or None."""
    if len(bootp) < 240 or bootp[0] != 2:  # BOOTREPLY
        return None
    if struct.unpack("!I", bootp[4:8])[0] != xid or bootp[236:240] != MAGIC_COOKIE:
        return None
    options = parse_options(bootp[240:])
    if options.get(OPT_MESSAGE_TYPE) != bytes([message_type]):
        return None
    file_field = bootp[108:236].split(b"\0", 1)[0].decode(errors="replace")
    server_id = options.get(OPT_SERVER_ID)
    return Offer(
        server_id=str(ipaddress.IPv4Address(server_id)) if server_id and len(server_id) == 4
        else None,
        source=source,
        yiaddr=str(ipaddress.IPv4Address(bootp[16:20])),
        siaddr=str(ipaddress.IPv4Address(bootp[20:24])),
        boot_file=file_field or options.get(OPT_BOOTFILE, b"").split(b"\0", 1)[0].decode(
            errors="replace"),
        vendor_class=options.get(OPT_VENDOR_CLASS, b"").decode(errors="replace"),
        options=options,
    )


def parse_reply(packet: bytes, xid: int) -> Offer | None:
    """The OFFER in an IPv4 packet, or None when it is anything else (or not for us)."""
    if len(packet) < 28 or packet[0] >> 4 != 4 or packet[9] != socket.IPPROTO_UDP:
        return None
    ihl = (packet[0] & 0x0F) * 4
    _, dport = struct.unpack("!HH", packet[ihl : ihl + 4])
    if dport != CLIENT_PORT:
        return None
    return parse_bootp(packet[ihl + 8 :], xid, str(ipaddress.IPv4Address(packet[12:16])))


def pxe_menu_items(offer: Offer) -> list[tuple[int, str]]:
    """The boot menu of a PXE offer (option 43, sub-option 9): (boot server type, label)."""
    sub = parse_options(offer.options.get(OPT_VENDOR_SPECIFIC, b"") + bytes([OPT_END]))
    menu, items = sub.get(9, b""), []
    while len(menu) >= 3:
        kind, length = struct.unpack("!HB", menu[:3])
        items.append((kind, menu[3 : 3 + length].decode(errors="replace")))
        menu = menu[3 + length :]
    return items


def request_boot_file(client: str, offer: Offer, mac: bytes, client_arch: int = 0,
                      seconds: float = 4.0) -> Offer | None:
    """What a PXE ROM does after a proxy-DHCP offer with a menu: ask the boot server (port
    4011) for the first menu item; the ACK names the file to fetch by TFTP."""
    items = pxe_menu_items(offer)
    if not items:
        return None
    xid = struct.unpack("!I", os.urandom(4))[0]
    header = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0,
        ipaddress.IPv4Address(client).packed, b"\0" * 4, b"\0" * 4, b"\0" * 4,
        mac.ljust(16, b"\0"), b"", b"",
    )  # fmt: skip
    options = _option(OPT_MESSAGE_TYPE, bytes([3]))  # DHCPREQUEST
    options += _option(OPT_VENDOR_CLASS, f"PXEClient:Arch:{client_arch:05d}:UNDI:002001".encode())
    options += _option(OPT_CLIENT_ARCH, struct.pack("!H", client_arch))
    options += _option(OPT_CLIENT_NDI, bytes([1, 2, 1]))
    options += _option(OPT_CLIENT_UUID, b"\0" + os.urandom(16))
    boot_item = _option(71, struct.pack("!HH", items[0][0], 0)) + bytes([OPT_END])
    options += _option(OPT_VENDOR_SPECIFIC, boot_item)
    payload = (header + MAGIC_COOKIE + options + bytes([OPT_END])).ljust(300, bytes([OPT_PAD]))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((client, 0))
        sock.settimeout(seconds)
        sock.sendto(payload, (offer.server, 4011))
        try:
            while True:
                data, (source, _) = sock.recvfrom(65535)
                ack = parse_bootp(data, xid, source, message_type=5)  # DHCPACK
                if ack is not None:
                    return ack
        except TimeoutError:
            return None


def discover(
    interface: str,
    seconds: float = 4.0,
    mac: bytes | None = None,
    vendor_class: str | None = None,
    user_class: str | None = None,
    client_arch: int | None = None,
) -> list[Offer]:
    """Send a DISCOVER on `interface` (again halfway through) and return every offer heard."""
    mac = mac or random_mac()
    xid = struct.unpack("!I", os.urandom(4))[0]
    packet = wrap_udp(build_discover(xid, mac, vendor_class, user_class, client_arch))
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(ETH_P_IP))
    except PermissionError:
        raise ProbeError("probing DHCP needs root (a packet socket)") from None
    offers: list[Offer] = []
    with sock:
        try:
            sock.bind((interface, ETH_P_IP))
            sock.sendto(packet, (interface, ETH_P_IP, 0, 0, BROADCAST_MAC))
        except OSError as exc:
            raise ProbeError(f"cannot send a DHCP probe on {interface}: {exc.strerror}") from None
        start = time.monotonic()
        resent = False
        while (left := start + seconds - time.monotonic()) > 0:
            if not resent and left < seconds / 2:
                sock.sendto(packet, (interface, ETH_P_IP, 0, 0, BROADCAST_MAC))
                resent = True
            readable, _, _ = select.select([sock], [], [], min(left, seconds / 4))
            if not readable:
                continue
            offer = parse_reply(sock.recv(65535), xid)
            if offer is not None and offer not in offers:
                offers.append(offer)
    return offers


def other_dhcp_servers(offers: list[Offer], own: set[str]) -> list[Offer]:
    """The offers of address-giving DHCP servers that are not this machine."""
    return [o for o in offers if o.gives_address and o.server not in own and o.source not in own]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m boot.pxe.dhcpprobe",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("interface")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--vendor-class", help="e.g. PXEClient:Arch:00000:UNDI:002001")
    parser.add_argument("--user-class", help="e.g. iPXE")
    parser.add_argument("--client-arch", type=int, help="PXE client architecture (0 BIOS, 7 EFI)")
    args = parser.parse_args(argv)
    try:
        offers = discover(args.interface, args.seconds, vendor_class=args.vendor_class,
                          user_class=args.user_class, client_arch=args.client_arch)
    except ProbeError as exc:
        print(f"dhcpprobe: {exc}", file=sys.stderr)
        return 2
    for o in offers:
        print(f"server={o.server} yiaddr={o.yiaddr} siaddr={o.siaddr} file={o.boot_file}"
              f" vendor_class={o.vendor_class}")
    return 0 if offers else 1


if __name__ == "__main__":
    sys.exit(main())
