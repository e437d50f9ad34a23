"""The DHCP probe's packets: a DISCOVER servers accept, OFFERs and PXE menus read back right."""

import ipaddress
import socket
import struct

from boot.pxe import dhcpprobe


def _offer_packet(xid, yiaddr, server, file=b"", options=b"", dport=68, message_type=2):
    bootp = struct.pack(
        "!BBBBIHH4s4s4s4s16s64s128s", 2, 1, 6, 0, xid, 0, 0x8000, b"\0" * 4,
        ipaddress.IPv4Address(yiaddr).packed, ipaddress.IPv4Address(server).packed,
        b"\0" * 4, b"\x02" * 6, b"", file,
    )  # fmt: skip
    opts = bytes([53, 1, message_type, 54, 4]) + ipaddress.IPv4Address(server).packed + options
    payload = bootp + dhcpprobe.MAGIC_COOKIE + opts + b"\xff"
    udp = struct.pack("!HHHH", 67, dport, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                     ipaddress.IPv4Address(server).packed, b"\xff" * 4)
    return ip + udp


def test_discover_is_a_broadcast_request_from_port_68_with_a_valid_ip_checksum():
    mac = dhcpprobe.random_mac()
    packet = dhcpprobe.wrap_udp(dhcpprobe.build_discover(0x1234, mac, "PXEClient", "iPXE", 0))
    assert dhcpprobe._checksum(packet[:20]) == 0  # a correct header sums to zero
    assert packet[16:20] == b"\xff" * 4 and packet[12:16] == b"\0" * 4
    assert struct.unpack("!HH", packet[20:24]) == (68, 67)
    bootp = packet[28:]
    assert bootp[0] == 1 and struct.unpack("!I", bootp[4:8])[0] == 0x1234
    assert struct.unpack("!H", bootp[10:12])[0] & 0x8000  # servers answer by broadcast
    assert bootp[28:34] == mac
    options = dhcpprobe.parse_options(bootp[240:])
    assert options[53] == b"\x01" and options[60] == b"PXEClient" and options[77] == b"iPXE"
    assert options[93] == b"\0\0"
    assert len(bootp) >= 300  # the BOOTP minimum some servers insist on


def test_random_mac_is_unicast_and_locally_administered():
    for _ in range(50):
        mac = dhcpprobe.random_mac()
        assert len(mac) == 6 and mac[0] & 0x01 == 0 and mac[0] & 0x02


def test_offer_is_read_with_its_server_address_and_boot_file():
    packet = _offer_packet(7, "10.0.0.50", "10.0.0.1", file=b"pxelinux.0")
    offer = dhcpprobe.parse_reply(packet, 7)
    assert offer.server == "10.0.0.1" and offer.yiaddr == "10.0.0.50"
    assert offer.boot_file == "pxelinux.0" and offer.gives_address


def test_replies_of_other_transactions_or_types_are_ignored():
    assert dhcpprobe.parse_reply(_offer_packet(7, "10.0.0.50", "10.0.0.1"), 8) is None
    assert dhcpprobe.parse_reply(_offer_packet(7, "10.0.0.50", "10.0.0.1", dport=67), 7) is None
    ack = _offer_packet(7, "10.0.0.50", "10.0.0.1", message_type=5)
    assert dhcpprobe.parse_reply(ack, 7) is None
    assert dhcpprobe.parse_reply(b"\x45" + b"\0" * 10, 7) is None


def test_boot_file_may_come_in_option_67():
    packet = _offer_packet(9, "10.0.0.5", "10.0.0.1", options=b"\x43\x09boot.ipxe")
    assert dhcpprobe.parse_reply(packet, 9).boot_file == "boot.ipxe"


def test_proxy_offers_do_not_count_as_address_servers_and_nor_do_we():
    own = {"10.0.0.1"}
    offers = [
        dhcpprobe.parse_reply(_offer_packet(1, "0.0.0.0", "10.0.0.9"), 1),  # a proxy
        dhcpprobe.parse_reply(_offer_packet(1, "10.0.0.70", "10.0.0.1"), 1),  # ourselves
    ]
    assert dhcpprobe.other_dhcp_servers(offers, own) == []
    site = dhcpprobe.parse_reply(_offer_packet(1, "10.0.0.80", "10.0.0.254"), 1)
    assert dhcpprobe.other_dhcp_servers([*offers, site], own) == [site]


def test_pxe_menu_items_are_read_from_option_43():
    menu = struct.pack("!HB", 0x8001, 8) + b"OAR Live"
    vendor = bytes([6, 1, 3, 9, len(menu)]) + menu + b"\xff"
    packet = _offer_packet(3, "0.0.0.0", "10.0.0.2", options=bytes([43, len(vendor)]) + vendor)
    offer = dhcpprobe.parse_reply(packet, 3)
    assert dhcpprobe.pxe_menu_items(offer) == [(0x8001, "OAR Live")]


def test_probe_without_privileges_or_interface_says_so(monkeypatch):
    def refuse(*args):
        raise PermissionError

    monkeypatch.setattr(socket, "socket", refuse)
    try:
        dhcpprobe.discover("eth9", 0.1)
    except dhcpprobe.ProbeError as exc:
        assert "root" in str(exc)
    else:
        raise AssertionError("no ProbeError")
