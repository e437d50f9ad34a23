"""The discovery beacon, over real UDP sockets on loopback (never a real broadcast)."""

import hashlib
import json
import socket
import threading
import time

import pytest

from autoconf import beacon

TOKEN = "s3cret-token"
CLUSTER = beacon.cluster_id(TOKEN)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def send_later(port: int, datagrams: list[bytes], delay: float = 0.2) -> threading.Thread:
    """Send raw datagrams to 127.0.0.1:port once the listener had time to bind."""

    def send() -> None:
        time.sleep(delay)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for data in datagrams:
                sock.sendto(data, ("127.0.0.1", port))
                time.sleep(0.02)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_cluster_id_is_the_start_of_the_token_hash_and_hides_the_token():
    assert hashlib.sha256(TOKEN.encode()).hexdigest()[:16] == CLUSTER
    assert TOKEN not in beacon.make_payload("10.0.0.1:6680", CLUSTER).decode()
    assert beacon.cluster_id("other") != CLUSTER


def test_payload_follows_the_contract():
    message = json.loads(beacon.make_payload("10.0.0.1:6680", CLUSTER))
    assert message == {"service": "oar-live", "registry": "10.0.0.1:6680", "cluster": CLUSTER}


@pytest.mark.parametrize(
    ("cidr", "broadcast"),
    [("10.0.0.1/24", "10.0.0.255"), ("192.168.4.7/22", "192.168.7.255"), ("10.1.2.3/8",
                                                                              "10.255.255.255")],
)
def test_broadcast_address_of_the_cluster_network(cidr, broadcast):
    assert beacon.broadcast_address(cidr) == broadcast


def datagram(**fields: object) -> bytes:
    message = {"service": "oar-live", "registry": "10.0.0.1:6680", "cluster": CLUSTER}
    message.update(fields)
    return json.dumps({k: v for k, v in message.items() if v is not None}).encode()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xfe garbage",
        b"not json",
        b"[1, 2]",
        b'"oar-live"',
        datagram(service="other"),
        datagram(cluster="x"),
        datagram(cluster=beacon.cluster_id("another cluster")),
        datagram(registry=None),
        datagram(registry="10.0.0.1"),
        datagram(registry="0.0.0.0:6680"),
        datagram(registry="10.0.0.1:0"),
        datagram(registry="10.0.0.1:99999"),
        datagram(registry="evil.example:80"),
        datagram(registry=["10.0.0.1:6680"]),
        b"[" * 2000,
        b'{"service": "oar-live", "x": [[1]]}',
        b"9" * 2000,
        datagram() + b"\x00",
        datagram() + b" " * 2048,
    ],
)
def test_parse_ignores_garbage_and_foreign_clusters(data):
    assert beacon.parse_payload(data, CLUSTER) is None


def test_parse_accepts_our_beacon():
    assert beacon.parse_payload(beacon.make_payload("10.0.0.1:6680", CLUSTER), CLUSTER) == (
        "10.0.0.1:6680"
    )


def test_listener_skips_foreign_and_garbage_datagrams_then_finds_ours():
    port = free_udp_port()
    foreign = beacon.make_payload("10.9.9.9:6680", beacon.cluster_id("another cluster"))
    ours = beacon.make_payload("10.0.0.1:6680", CLUSTER)
    send_later(port, [b"garbage", foreign, b'{"service": "oar-live"}', ours])
    assert beacon.listen(CLUSTER, timeout=5, bind="127.0.0.1", port=port) == "10.0.0.1:6680"


def test_listener_gives_up_after_the_timeout_when_only_foreign_beacons_come():
    port = free_udp_port()
    foreign = beacon.make_payload("10.9.9.9:6680", beacon.cluster_id("another cluster"))
    send_later(port, [foreign] * 5, delay=0.05)
    # The clock: at the start, before the first datagram, after it, then after the second one.
    readings = iter([0.0, 0.0, 30.0, 61.0])
    assert beacon.listen(CLUSTER, timeout=60, bind="127.0.0.1", port=port,
                         clock=lambda: next(readings)) is None
    assert next(readings, "all read") == "all read", "it stopped before the timeout"


def test_sender_is_heard_by_the_listener_and_stops_when_asked():
    port = free_udp_port()
    sender = beacon.BeaconSender("127.0.0.1:6680", CLUSTER, "127.0.0.1", port=port, interval=0.1)
    with sender:
        assert beacon.listen(CLUSTER, timeout=5, bind="127.0.0.1", port=port) == "127.0.0.1:6680"
    assert not sender._thread.is_alive()
    sent = sender.sent
    assert sent >= 1
    time.sleep(0.3)
    assert sender.sent == sent  # nothing is sent after stop()


def test_sender_repeats_every_interval():
    port = free_udp_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))
        sock.settimeout(5)
        with beacon.BeaconSender("10.0.0.1:6680", CLUSTER, "127.0.0.1", port=port, interval=0.1):
            received = [sock.recvfrom(2048)[0] for _ in range(3)]
    assert all(beacon.parse_payload(d, CLUSTER) == "10.0.0.1:6680" for d in received)


def test_sender_survives_an_unreachable_destination(capsys):
    # Port 0 makes every send fail locally (EINVAL), like a network that is not up yet.
    sender = beacon.BeaconSender("10.0.0.1:6680", CLUSTER, "127.0.0.1", port=0, interval=0.05)
    with sender:
        time.sleep(0.3)
        assert sender._thread.is_alive()
    err = capsys.readouterr().err
    assert err.count("beacon to 127.0.0.1:0 failed") == 1  # reported once, not at every tick


def test_sender_refuses_a_registry_that_nodes_could_not_use():
    with pytest.raises(ValueError, match="not an IPv4:PORT"):
        beacon.BeaconSender("0.0.0.0:6680", CLUSTER, "127.0.0.1")


def test_the_hosts_tag_travels_with_the_beacon_and_a_malformed_one_is_dropped():
    tag = "0123456789abcdef0123"
    data = beacon.make_payload("10.0.0.1:6680", CLUSTER, tag)
    assert beacon.parse_beacon(data, CLUSTER) == beacon.Beacon("10.0.0.1:6680", tag)
    assert beacon.parse_payload(data, CLUSTER) == "10.0.0.1:6680"
    for bad in ("", "NOT-HEX", "a" * 65, 12, None, "01234567\n"):
        message = json.loads(beacon.make_payload("10.0.0.1:6680", CLUSTER))
        message["hosts"] = bad
        found = beacon.parse_beacon(json.dumps(message).encode(), CLUSTER)
        assert found == beacon.Beacon("10.0.0.1:6680", None), bad
    assert beacon.parse_beacon(beacon.make_payload("10.0.0.1:6680", "other", tag), CLUSTER) is None
    nested = json.loads(data)
    nested["hosts"] = [tag]
    assert beacon.parse_beacon(json.dumps(nested).encode(), CLUSTER) is None, "not a beacon"


def test_a_kick_sends_the_new_tag_at_once_and_a_burst_of_kicks_shares_one_datagram():
    port = free_udp_port()
    tags = iter(f"{n:020x}" for n in range(1000))
    current = [next(tags)]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", port))
        sock.settimeout(5)
        sender = beacon.BeaconSender("10.0.0.1:6680", CLUSTER, "127.0.0.1", port=port,
                                     interval=60, hosts_tag=lambda: current[0])
        with sender:
            first = beacon.parse_beacon(sock.recvfrom(2048)[0], CLUSTER)
            assert first.hosts == current[0]
            kicked = time.monotonic()
            for _ in range(20):  # twenty registrations in a row
                current[0] = next(tags)
                sender.kick()
            second = beacon.parse_beacon(sock.recvfrom(2048)[0], CLUSTER)
            heard = time.monotonic() - kicked
            assert second.hosts == current[0], "the datagram carries the latest tag"
            sock.settimeout(beacon.KICK_SPACING * 4)
            with pytest.raises(TimeoutError):
                sock.recvfrom(2048)  # not one datagram per kick: the next is the 60 s tick
    assert heard < 5, f"a kick is sent at once (after {heard:.1f} s), not at the next tick (60 s)"
    assert sender.sent == 2


def test_a_hosts_file_that_cannot_be_read_leaves_the_registry_announced():
    def unreadable() -> str:
        raise PermissionError("hosts")

    sender = beacon.BeaconSender("10.0.0.1:6680", CLUSTER, "127.0.0.1", hosts_tag=unreadable)
    assert beacon.parse_beacon(sender.payload, CLUSTER) == beacon.Beacon("10.0.0.1:6680", None)
