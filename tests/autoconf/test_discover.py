"""Finding the server: oar.server, DHCP next-server from real lease formats, beacon, prompt."""

import os
import pty
import socket
from pathlib import Path
from types import MappingProxyType

import pytest

from autoconf import beacon, discover, prompt
from autoconf.config import REGISTRY_PORT, Config, Role
from autoconf.discover import Source
from tests.autoconf.fakeclock import FakeClock, screen

TOKEN = "cluster-token"

# What klibc's ipconfig (run by live-boot in the initramfs for a network boot) writes.
KLIBC_NET_CONF = """\
DEVICE='ens3'
PROTO='dhcp'
IPV4ADDR='10.0.0.42'
IPV4BROADCAST='10.0.0.255'
IPV4NETMASK='255.255.255.0'
IPV4GATEWAY='10.0.0.1'
IPV4DNS0='10.0.0.1'
IPV4DNS1='0.0.0.0'
HOSTNAME='node-525400000042'
DNSDOMAIN=''
NISDOMAIN=''
ROOTSERVER='{server}'
ROOTPATH=''
filename='pxelinux.0'
UPTIME='7'
DHCPLEASETIME='3600'
DOMAINSEARCH=''
"""

# systemd-networkd 252 (/run/systemd/netif/leases/IFINDEX).
NETWORKD_LEASE = """\
# This is private data. Do not parse.
ADDRESS=10.0.0.43
NETMASK=255.255.255.0
ROUTER=10.0.0.1
SERVER_ADDRESS=10.0.0.1
NEXT_SERVER={server}
BROADCAST=10.0.0.255
LIFETIME=3600
T1=1800
T2=3150
"""

# ISC dhclient (ifupdown): leases are appended, the newest last.
DHCLIENT_LEASES = """\
lease {{
  interface "eth0";
  fixed-address 10.0.0.44;
  next-server {old};
  filename "pxelinux.0";
  option subnet-mask 255.255.255.0;
  option routers 10.0.0.1;
  option dhcp-lease-time 3600;
  option dhcp-server-identifier 10.0.0.1;
  renew 2 2024/01/02 10:00:00;
  rebind 2 2024/01/02 10:20:00;
  expire 2 2024/01/02 10:30:00;
}}
lease {{
  interface "eth0";
  fixed-address 10.0.0.44;
  next-server {new};
  option subnet-mask 255.255.255.0;
  option dhcp-server-identifier 10.0.0.1;
  renew 2 2024/01/02 11:00:00;
  rebind 2 2024/01/02 11:20:00;
  expire 2 2024/01/02 11:30:00;
}}
"""


def config(**values) -> Config:
    values.setdefault("timeout", 0)
    sources = values.pop("sources", {})
    return Config(role=Role.NODE, token=TOKEN, sources=MappingProxyType(sources), **values)


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def answers(*hosts: str):
    """A probe for which only `hosts` run a registration service."""
    probed = []

    def probe(host: str, port: int) -> bool:
        probed.append((host, port))
        return host in hosts

    probe.probed = probed
    return probe


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- oar.server ---------------------------------------------------------------------------


def test_oar_server_from_the_command_line_wins_over_everything(tmp_path):
    write(tmp_path, "run/net-ens3.conf", KLIBC_NET_CONF.format(server="10.0.0.7"))
    probe = answers("10.0.0.7")
    server = discover.find_server(
        config(server="10.0.0.9:7000", sources={"server": "cmdline"}), tmp_path, probe=probe
    )
    assert (server.host, server.port, server.source) == ("10.0.0.9", 7000, Source.CONFIG)
    assert server.describe() == "10.0.0.9:7000 from oar.server (cmdline)"
    assert probe.probed == []  # nothing else was even looked at


def test_oar_server_without_port_uses_the_registry_port(tmp_path):
    server = discover.find_server(config(server="10.0.0.9"), tmp_path, probe=answers())
    assert server.address == f"10.0.0.9:{REGISTRY_PORT}"
    assert server.url == f"http://10.0.0.9:{REGISTRY_PORT}"


# ---- DHCP next-server ---------------------------------------------------------------------


def test_next_server_from_the_initramfs_ipconfig_file(tmp_path):
    write(tmp_path, "run/net-ens3.conf", KLIBC_NET_CONF.format(server="10.0.0.1"))
    server = discover.find_server(config(), tmp_path, probe=answers("10.0.0.1"),
                                  beacon_timeout=0)
    assert (server.host, server.port, server.source) == ("10.0.0.1", REGISTRY_PORT, Source.DHCP)
    assert server.origin == "/run/net-ens3.conf"


def test_initramfs_file_without_a_next_server_or_address_is_skipped(tmp_path):
    write(tmp_path, "run/net-ens3.conf", KLIBC_NET_CONF.format(server="0.0.0.0"))
    write(tmp_path, "run/net-ens4.conf",
          KLIBC_NET_CONF.format(server="10.0.0.8").replace("10.0.0.42", "0.0.0.0"))
    assert discover.dhcp_next_servers(tmp_path) == []


def test_initramfs_values_are_read_as_shell_quoted(tmp_path):
    text = KLIBC_NET_CONF.format(server="10.0.0.3").replace(
        "HOSTNAME='node-525400000042'", "HOSTNAME='it'\\''s'"
    )
    write(tmp_path, "run/net-ens3.conf", text)
    assert discover.dhcp_next_servers(tmp_path) == [("10.0.0.3", "/run/net-ens3.conf")]


def test_next_server_from_a_systemd_networkd_lease(tmp_path):
    write(tmp_path, "run/systemd/netif/leases/2", NETWORKD_LEASE.format(server="10.0.0.2"))
    assert discover.dhcp_next_servers(tmp_path) == [
        ("10.0.0.2", "/run/systemd/netif/leases/2")
    ]


def test_next_server_from_dhclient_leases_takes_the_newest_first(tmp_path):
    write(tmp_path, "var/lib/dhcp/dhclient.eth0.leases",
          DHCLIENT_LEASES.format(old="10.0.0.250", new="10.0.0.4"))
    assert discover.dhcp_next_servers(tmp_path) == [
        ("10.0.0.4", "/var/lib/dhcp/dhclient.eth0.leases"),
        ("10.0.0.250", "/var/lib/dhcp/dhclient.eth0.leases"),
    ]


def test_a_next_server_that_does_not_answer_is_not_taken(tmp_path, capsys):
    # qemu's user network or a site DHCP server name a next-server that is not ours.
    write(tmp_path, "run/net-ens3.conf", KLIBC_NET_CONF.format(server="10.0.2.2"))
    write(tmp_path, "var/lib/dhcp/dhclient.leases",
          DHCLIENT_LEASES.format(old="10.0.0.250", new="10.0.0.4"))
    probe = answers("10.0.0.4")
    server = discover.find_server(config(), tmp_path, probe=probe, beacon_timeout=0)
    assert server.host == "10.0.0.4"
    assert probe.probed[0] == ("10.0.2.2", REGISTRY_PORT)
    assert "10.0.2.2 (/run/net-ens3.conf) does not answer" in capsys.readouterr().out


def test_garbage_lease_files_are_ignored(tmp_path):
    write(tmp_path, "run/net-ens3.conf", "ROOTSERVER='unterminated\n\x00\xff")
    write(tmp_path, "run/systemd/netif/leases/3", "NEXT_SERVER=not-an-ip\n")
    write(tmp_path, "var/lib/dhcp/dhclient.leases",
          "lease {\n next-server ;\n next-server 1.2.3.4.5;\n")
    assert discover.dhcp_next_servers(tmp_path) == []


def test_registry_answers_only_when_a_port_listens():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert discover.registry_answers("127.0.0.1", port, timeout=2)
    assert not discover.registry_answers("127.0.0.1", port, timeout=2)


# ---- beacon -------------------------------------------------------------------------------


def test_beacon_of_our_cluster_is_used_when_dhcp_names_nobody(tmp_path):
    port = free_udp_port()
    sender = beacon.BeaconSender("127.0.0.1:6690", beacon.cluster_id(TOKEN), "127.0.0.1",
                                 port=port, interval=0.1)
    with sender:
        server = discover.find_server(config(), tmp_path, probe=answers(), beacon_timeout=5,
                                      beacon_port=port, beacon_bind="127.0.0.1")
    assert (server.host, server.port, server.source) == ("127.0.0.1", 6690, Source.BEACON)


def test_beacon_of_another_cluster_is_not_followed(tmp_path):
    port = free_udp_port()
    sender = beacon.BeaconSender("127.0.0.1:6690", beacon.cluster_id("other token"),
                                 "127.0.0.1", port=port, interval=0.1)
    with sender:
        server = discover.find_server(config(), tmp_path, probe=answers(), beacon_timeout=0.6,
                                      beacon_port=port, beacon_bind="127.0.0.1", ask=False)
        sent = sender.sent
    assert server is None
    assert sent >= 2, "no foreign beacon was on the network while it listened"


# ---- prompt -------------------------------------------------------------------------------


class Console:
    """A pseudo-terminal standing for the console, and the fake clock its prompt counts down on."""

    def __init__(self) -> None:
        self.master, self.slave = pty.openpty()
        self.clock = FakeClock()
        self.asked: list[str] = []

    def type_at(self, seconds: float, keys: str) -> None:
        self.clock.type_at(seconds, self.master, keys)

    def shown(self) -> str:
        return screen(self.master)

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def console(monkeypatch):
    """The real autoconf.prompt, asking on a pseudo-terminal instead of stdin, on a fake clock."""
    term = Console()
    real_ask = prompt.ask

    def ask(question, *args, **kw):
        term.asked.append(question)
        return real_ask(question, *args, fd=term.slave, out_fd=term.slave, clock=term.clock,
                        wait=term.clock.wait_key, **kw)

    monkeypatch.setattr(prompt, "ask", ask)
    yield term
    term.close()


def test_prompt_is_the_last_resort_and_bad_answers_ask_again(tmp_path, console):
    console.type_at(1, "not an address\r")
    console.type_at(2, "10.0.0.77:6000\r")
    server = discover.find_server(config(timeout=5), tmp_path, probe=answers(),
                                  beacon_timeout=0)
    assert (server.host, server.port, server.source) == ("10.0.0.77", 6000, Source.PROMPT)
    assert "'not an address' is not an IPv4 address" in console.shown()


def test_prompt_timeout_means_no_server(tmp_path, console):
    assert discover.find_server(config(timeout=1), tmp_path, probe=answers(),
                                beacon_timeout=0) is None
    assert console.clock.elapsed == 1  # it was asked for the whole timeout
    assert "OAR server address" in console.shown()


def test_no_prompt_when_timeout_is_zero_or_asking_is_off(tmp_path, console):
    assert discover.find_server(config(timeout=0), tmp_path, probe=answers(),
                                beacon_timeout=0) is None
    assert discover.find_server(config(timeout=5), tmp_path, probe=answers(),
                                beacon_timeout=0, ask=False) is None
    assert console.clock.elapsed == 0
    assert "OAR server address" not in console.shown()


def test_the_prompt_is_never_shown_when_another_source_answers(tmp_path, console):
    port = free_udp_port()
    with beacon.BeaconSender("127.0.0.1:6690", beacon.cluster_id(TOKEN), "127.0.0.1",
                             port=port, interval=0.1):
        from_beacon = discover.find_server(config(timeout=5), tmp_path, probe=answers(),
                                           beacon_timeout=5, beacon_port=port,
                                           beacon_bind="127.0.0.1")
    write(tmp_path, "run/net-ens3.conf", KLIBC_NET_CONF.format(server="10.0.0.1"))
    from_dhcp = discover.find_server(config(timeout=5), tmp_path, probe=answers("10.0.0.1"))
    from_config = discover.find_server(config(timeout=5, server="10.0.0.9"), tmp_path)
    sources = [s.source for s in (from_beacon, from_dhcp, from_config)]
    assert sources == [Source.BEACON, Source.DHCP, Source.CONFIG]
    assert console.asked == []
    assert console.clock.elapsed == 0
    assert "OAR server address" not in console.shown()


@pytest.mark.parametrize("text", ["", "10.0.0", "10.0.0.1:", "10.0.0.1:0", "10.0.0.1:70000",
                                  "0.0.0.0", "224.0.0.1", "10.0.0.1:x"])
def test_parse_server_rejects_what_a_node_cannot_reach(text):
    with pytest.raises(ValueError):
        discover.parse_server(text)


def test_beacon_listen_error_is_reported_not_raised(tmp_path, capsys):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as busy:
        busy.bind(("127.0.0.1", 0))  # no SO_REUSEADDR: the listener cannot share it
        port = busy.getsockname()[1]
        server = discover.find_server(config(), tmp_path, probe=answers(), beacon_timeout=0.2,
                                      beacon_port=port, beacon_bind="127.0.0.1", ask=False)
    assert server is None
    assert "cannot listen for the beacon" in capsys.readouterr().out
