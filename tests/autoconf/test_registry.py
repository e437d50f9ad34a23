"""The registration service: validation, idempotence, serialisation; fake and real OAR."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from autoconf import etchosts
from autoconf import registry as registry_module
from autoconf.detect import Detection
from autoconf.oarstate import Oar, OarError, OarResource
from autoconf.registration import BadRequest, validate_registration
from autoconf.registry import (
    BODY_DEPTH,
    MAX_BODY,
    Registry,
    RegistrySettings,
    ServerState,
)
from autoconf.resources import Granularity
from tests.autoconf.fakenodes import (
    get,
    new_hostname,
    oar_node_sshd,
    post,
    registration,
    serving,
)

TOKEN = "s3cret-token-for-tests"


class FakeOar:
    """OAR's resources table in memory, with oarnodesetting's and oarremoveresource's rules."""

    def __init__(self) -> None:
        self.rows: list[OarResource] = []
        self.calls: list[list[str]] = []

    def resources(self) -> list[OarResource]:
        return list(self.rows)

    def host_resources(self, host: str) -> list[OarResource]:
        return [r for r in self.rows if r.host == host]

    def host_view(self, host: str) -> tuple[list[OarResource], dict[str, int]]:
        others = [r for r in self.rows if r.host != host]
        return self.host_resources(host), {
            name: max((getattr(r, name) or 0 for r in others), default=0)
            for name in ("cpu", "core", "thread")}

    def add_node(self, host: str, resources: list, state: str = "Absent") -> list[int]:
        """One transaction: every resource of the node at once, in `state`."""
        self.calls.append(["add_node", host, state, str(len(resources))])
        first = max((r.resource_id for r in self.rows), default=0) + 1
        self.rows += [OarResource(first + n, host, state, "UnChanged", r.cpu, r.core, r.thread,
                                  r.cpuset, r.mem) for n, r in enumerate(resources)]
        return list(range(first, first + len(resources)))

    def set_state(self, host: str, state: str) -> None:
        self.calls.append(["oarnodesetting", "-n", "-s", state, "-h", host])
        self.rows = [replace(r, state=state) if r.host == host else r for r in self.rows]

    def change_state(self, host: str, state: str, timeout: float = 60) -> list[OarResource]:
        self.set_state(host, state)
        return self.wait_for_state(host, state, timeout)

    def wait_for_state(self, host: str, state: str, timeout: float = 60) -> list[OarResource]:
        if any(r.state != state for r in self.host_resources(host)):
            raise OarError("not yet")
        return self.host_resources(host)

    def remove(self, resource_id: int) -> None:
        self.calls.append(["oarremoveresource", str(resource_id)])
        (row,) = [r for r in self.rows if r.resource_id == resource_id]
        assert row.state == "Dead", "OAR refuses to remove a resource that is not Dead"
        self.rows.remove(row)


def settings(tmp_path: Path, oar_conf: Path | None = None) -> RegistrySettings:
    conf = oar_conf or tmp_path / "oar.conf"
    if oar_conf is None:
        conf.write_text('SERVER_HOSTNAME="localhost"\n')
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    return RegistrySettings(
        token=TOKEN,
        server=ServerState("localhost", "127.0.0.1", "127.0.0.0/8"),
        oar_conf=conf,
        hosts_file=hosts,
        state_timeout=60,
        checks_file=tmp_path / "checks.json",
    )


class FakeNodes:
    """Which nodes answer the check (the reason for the others), and the checks made."""

    def __init__(self) -> None:
        self.broken: dict[str, str] = {}
        self.checked: list[tuple[str, str]] = []

    def check(self, host: str, address: str) -> str | None:
        self.checked.append((host, address))
        return self.broken.get(host)


@pytest.fixture
def nodes() -> FakeNodes:
    return FakeNodes()


@pytest.fixture
def fake(tmp_path, nodes):
    oar = FakeOar()
    registry = Registry(settings(tmp_path), oar, check=nodes.check)
    return registry, oar


def _register(registry: Registry, body: dict) -> dict:
    from autoconf.registry import check_token, validate_registration

    check_token(body, registry.settings.token)
    return registry.register(*validate_registration(body, registry.settings))


# ----------------------------------------------------------------------------- unit


def test_new_node_gets_resources_numbered_like_oar_resources_init(fake):
    registry, oar = fake
    host = new_hostname()
    reply = _register(registry, registration(TOKEN, host, "127.0.0.5", sockets=2, cores=2))
    assert reply["changed"] is True and reply["hostname"] == host
    assert [(r["cpu"], r["core"], r["cpuset"]) for r in reply["resources"]] == [
        (1, 1, "0"), (1, 2, "1"), (2, 3, "2"), (2, 4, "3")]
    assert len(oar.host_resources(host)) == 4
    assert reply["oar_conf"] == 'SERVER_HOSTNAME="localhost"\n'
    assert f"127.0.0.5 {host}" in reply["hosts"] and "127.0.0.1 localhost" in reply["hosts"]
    assert etchosts.parse_block(registry.settings.hosts_file.read_text())[host] == "127.0.0.5"


def test_second_node_continues_cpu_and_core_ids(fake):
    registry, oar = fake
    _register(registry, registration(TOKEN, new_hostname(), "127.0.0.5", sockets=2, cores=2))
    reply = _register(registry, registration(TOKEN, new_hostname(), "127.0.0.6", cores=2))
    assert [(r["cpu"], r["core"], r["cpuset"]) for r in reply["resources"]] == [
        (3, 5, "0"), (3, 6, "1")]


def test_registering_again_writes_nothing_and_keeps_the_resources(fake):
    registry, oar = fake
    host = new_hostname()
    body = registration(TOKEN, host, "127.0.0.5", sockets=2, cores=2, threads=2)
    first = _register(registry, body)
    calls = len(oar.calls)
    second = _register(registry, body)
    assert second["changed"] is False
    assert second["resources"] == first["resources"]
    assert len(oar.calls) == calls, "an unchanged node must not cause any OAR command"


def test_an_oar_26_server_registers_one_resource_per_core_with_its_hyperthreads(tmp_path):
    oar = FakeOar()
    registry = Registry(replace(settings(tmp_path), granularity=Granularity.CORE), oar,
                        check=FakeNodes().check)
    host = new_hostname()
    body = registration(TOKEN, host, "127.0.0.5", sockets=2, cores=2, threads=2)
    reply = _register(registry, body)
    assert [(r["cpu"], r["core"], r["cpuset"]) for r in reply["resources"]] == [
        (1, 1, "0,2"), (1, 2, "1,3"), (2, 3, "4,6"), (2, 4, "5,7")]
    assert [(r.core, r.thread, r.cpuset) for r in oar.host_resources(host)] == [
        (1, None, "0,2"), (2, None, "1,3"), (3, None, "4,6"), (4, None, "5,7")]
    calls = len(oar.calls)
    assert _register(registry, body)["changed"] is False
    assert len(oar.calls) == calls, "the same cores again: nothing to write"
    other = _register(registry, registration(TOKEN, new_hostname(), "127.0.0.6", cores=2))
    assert [(r["cpu"], r["core"], r["cpuset"]) for r in other["resources"]] == [
        (3, 5, "0"), (3, 6, "1")]


def test_registering_again_after_absent_makes_the_node_alive(fake):
    registry, oar = fake
    host = new_hostname()
    body = registration(TOKEN, host, "127.0.0.5")
    _register(registry, body)
    oar.set_state(host, "Absent")
    reply = _register(registry, body)
    assert reply["changed"] is False
    assert {r.state for r in oar.host_resources(host)} == {"Alive"}


def test_a_new_node_enters_whole_and_becomes_alive_only_after_its_check(fake, nodes):
    registry, oar = fake
    host = new_hostname()
    reply = _register(registry, registration(TOKEN, host, "127.0.0.5", sockets=2, cores=4))
    assert oar.calls == [["add_node", host, "Absent", "8"],
                         ["oarnodesetting", "-n", "-s", "Alive", "-h", host]]
    assert nodes.checked == [(host, "127.0.0.5")], "checked once, before being made Alive"
    assert reply["state"] == "Alive" and reply["problem"] is None
    assert {r.state for r in oar.host_resources(host)} == {"Alive"}


def test_a_node_that_does_not_answer_stays_absent_with_the_reason(fake, nodes):
    registry, oar = fake
    host = new_hostname()
    nodes.broken[host] = f"{host}: oar-node's sshd at 127.0.0.5:6667 does not let oar in"
    reply = _register(registry, registration(TOKEN, host, "127.0.0.5", cores=3))
    assert reply["state"] == "Absent" and "6667" in reply["problem"]
    assert {r.state for r in oar.host_resources(host)} == {"Absent"}
    assert len(oar.host_resources(host)) == 3, "all of the node, not schedulable"
    assert not any(c[:4] == ["oarnodesetting", "-n", "-s", "Alive"] for c in oar.calls)
    checks = json.loads(registry.settings.checks_file.read_text())
    assert checks[host]["ok"] is False and "6667" in checks[host]["problem"]
    assert registry.node(host)["problem"] == nodes.broken[host]

    del nodes.broken[host]  # oar-node's sshd is up now: the node registers again
    again = _register(registry, registration(TOKEN, host, "127.0.0.5", cores=3))
    assert again["state"] == "Alive" and again["changed"] is False
    assert {r.state for r in oar.host_resources(host)} == {"Alive"}
    assert json.loads(registry.settings.checks_file.read_text())[host]["ok"] is True


@pytest.mark.parametrize("healthy", [True, False])
def test_a_suspected_node_is_checked_again_and_revived_or_kept_with_why(fake, nodes, healthy,
                                                                        capsys):
    registry, oar = fake
    host = new_hostname()
    body = registration(TOKEN, host, "127.0.0.5", cores=2)
    _register(registry, body)
    oar.rows = [replace(r, state="Suspected") if r.resource_id == 1 else r for r in oar.rows]
    if not healthy:
        nodes.broken[host] = f"{host}: disk full (/tmp has 0 KiB free)"
    reply = _register(registry, body)
    states = {r.state for r in oar.host_resources(host)}
    log = capsys.readouterr().err
    if healthy:
        assert reply["state"] == "Alive" and states == {"Alive"}
        assert f"{host}: was Alive/Suspected, answers on oar-node's port as oar: set Alive" in log
    else:
        assert reply["state"] == "Alive/Suspected" and "disk full" in reply["problem"]
        assert "Suspected" in states and "disk full" in log
    assert len(nodes.checked) == 2


def test_an_alive_node_registering_again_is_not_checked(fake, nodes):
    registry, _oar = fake
    body = registration(TOKEN, new_hostname(), "127.0.0.5")
    _register(registry, body)
    _register(registry, body)
    assert len(nodes.checked) == 1


def test_a_node_already_on_its_way_to_alive_is_not_checked_twice(fake, nodes):
    registry, oar = fake
    body = registration(TOKEN, new_hostname(), "127.0.0.5")
    _register(registry, body)
    oar.rows = [replace(r, state="Absent", next_state="Alive") for r in oar.rows]  # not applied
    assert _register(registry, body)["state"] == "Alive"
    assert len(nodes.checked) == 1


def test_the_hosts_block_is_sent_again_only_when_it_changed(fake):
    from autoconf.client import RegistryClient

    registry, _oar = fake
    with serving(registry) as port:
        client = RegistryClient(f"http://127.0.0.1:{port}", TOKEN)
        text, tag = client.hosts()
        assert text is not None and "127.0.0.1 localhost" in text and tag
        assert client.hosts(tag) == (None, tag), "unchanged: 304, no body"
        host = new_hostname()
        _register(registry, registration(TOKEN, host, "127.0.0.5"))
        text, new_tag = client.hosts(tag)
        assert text is not None and f"127.0.0.5 {host}" in text and new_tag != tag


def test_polls_share_one_read_of_the_table(tmp_path):
    oar = FakeOar()
    now = [0.0]
    registry = Registry(settings(tmp_path), oar, check=FakeNodes().check, clock=lambda: now[0])
    hosts = [new_hostname() for _ in range(20)]
    for n, host in enumerate(hosts):
        _register(registry, registration(TOKEN, host, f"127.0.5.{n + 1}"))
    reads = []
    oar.resources = lambda: reads.append(1) or list(oar.rows)  # count the full reads
    for _ in range(5):
        for host in hosts:
            assert registry.node(host)["state"] == "Alive"
    assert len(reads) == 1, "100 polls of 20 nodes: one read of the table"
    now[0] += registry_module.SNAPSHOT_SECONDS
    assert registry.node(hosts[0])["state"] == "Alive" and len(reads) == 2


def test_changed_topology_replaces_the_old_resources(fake):
    registry, oar = fake
    host, other = new_hostname(), new_hostname()
    _register(registry, registration(TOKEN, host, "127.0.0.5", cores=2))
    _register(registry, registration(TOKEN, other, "127.0.0.6", cores=2))
    reply = _register(registry, registration(TOKEN, host, "127.0.0.5", cores=4))
    assert reply["changed"] is True
    mine = oar.host_resources(host)
    assert sorted(int(r.cpuset) for r in mine) == [0, 1, 2, 3]
    assert ["oarremoveresource", "1"] in oar.calls and ["oarremoveresource", "2"] in oar.calls
    cores = [r.core for r in oar.rows]
    assert len(cores) == len(set(cores)) == 6, "core ids stay unique cluster-wide"


def test_solo_server_registers_under_its_own_name(tmp_path):
    oar = FakeOar()
    base = settings(tmp_path)
    own = new_hostname()
    registry = Registry(replace(base, server=replace(base.server, detection_hostname=own)), oar,
                        check=FakeNodes().check)
    reply = _register(registry, registration(TOKEN, own, "127.0.0.1"))
    assert reply["hostname"] == "localhost"
    assert {r.host for r in oar.rows} == {"localhost"}


# ----------------------------------------------------------------------------- bad requests


def _bad_bodies(host: str) -> dict[str, tuple[int, bytes]]:
    """name -> (expected status, raw body)."""
    good = registration(TOKEN, host, "127.0.0.9", cores=2)

    def body(mutate) -> bytes:
        data = json.loads(json.dumps(good))
        mutate(data)
        return json.dumps(data).encode()

    def cpu(field, value):
        return lambda d: d["detection"]["cpus"][0].__setitem__(field, value)

    return {
        "wrong token": (401, body(lambda d: d.__setitem__("token", "guess"))),
        "no token": (401, body(lambda d: d.pop("token"))),
        "token of the wrong type": (401, body(lambda d: d.__setitem__("token", 12))),
        "not JSON": (400, b"{not json"),
        "JSON but a list": (400, b"[1, 2]"),
        "binary garbage": (400, bytes(range(256))),
        "huge body": (400, b'{"token": "' + b"x" * (MAX_BODY + 10) + b'"}'),
        "Latin-1 body": (400, body(lambda d: d["detection"].__setitem__("hostname", "h\xe9"))
                         .replace(b"\\u00e9", b"\xe9")),
        "NUL byte": (400, b'{"token": "\x00"}'),
        "deeply nested JSON": (400, b'{"token": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
        "nested past the bound": (400, body(lambda d: d.__setitem__(
            "detection", json.loads("[" * BODY_DEPTH + "]" * BODY_DEPTH)))),
        "integer of 5000 digits": (400, b'{"token": ' + b"9" * 5000 + b"}"),
        "bad hostname": (400, body(lambda d: d["detection"].__setitem__("hostname", "evil;rm"))),
        "hostname too short": (400, body(lambda d: d["detection"].__setitem__(
            "hostname", "node-123"))),
        "uppercase hostname": (400, body(lambda d: d["detection"].__setitem__(
            "hostname", host.upper()))),
        "negative cpuset": (400, body(cpu("cpu", -1))),
        "duplicate cpuset": (400, body(lambda d: d["detection"]["cpus"][1].__setitem__("cpu", 0))),
        "duplicate core place": (400, body(lambda d: d["detection"]["cpus"][1].__setitem__(
            "core", 0))),
        "cpu id out of range": (400, body(cpu("cpu", 10**9))),
        "cpu as string": (400, body(cpu("cpu", "0"))),
        "cpu as bool": (400, body(cpu("thread", True))),
        "no cpus": (400, body(lambda d: d["detection"].__setitem__("cpus", []))),
        "missing detection": (400, body(lambda d: d.pop("detection"))),
        "missing address": (400, body(lambda d: d.pop("address"))),
        "missing mem": (400, body(lambda d: d["detection"].pop("mem_mib"))),
        "zero memory": (400, body(lambda d: d["detection"].__setitem__("mem_mib", 0))),
        "memory as float": (400, body(lambda d: d["detection"].__setitem__("mem_mib", 4096.5))),
        "unknown field": (400, body(lambda d: d.__setitem__("admin", True))),
        "detection not an object": (400, body(lambda d: d.__setitem__("detection", "x"))),
        "address outside the network": (400, body(lambda d: d.__setitem__(
            "address", "10.1.2.3"))),
        "address not IPv4": (400, body(lambda d: d.__setitem__("address", "::1"))),
        "address with shell": (400, body(lambda d: d.__setitem__("address", "127.0.0.1; id"))),
        "interface name too long": (400, body(lambda d: d["detection"]["interfaces"][0]
                                              .__setitem__("name", "x" * 40))),
        "boot interface unknown": (400, body(lambda d: d["detection"].__setitem__(
            "boot_interface", "wlan9"))),
    }


def test_bad_requests_are_refused_and_write_nothing(fake):
    registry, oar = fake
    with serving(registry) as port:
        for name, (expected, raw) in _bad_bodies(new_hostname()).items():
            status, answer = post(port, raw)
            assert status == expected, f"{name}: got {status} {answer}"
            if expected == 400:
                assert isinstance(answer, dict) and answer.get("error"), name
    assert oar.rows == [] and oar.calls == []
    assert etchosts.parse_block(registry.settings.hosts_file.read_text()) == {}


def test_a_refused_detection_is_refused_with_the_detections_own_reason(fake):
    """One validator: the registry answers with the sentence Detection.from_json gives."""
    registry, _oar = fake
    body = registration(TOKEN, new_hostname(), "127.0.0.9", cores=2)
    body["detection"]["cpus"][1]["cpu"] = 0
    with pytest.raises(ValueError) as direct:
        Detection.from_json(body["detection"])
    with pytest.raises(BadRequest) as refused:
        validate_registration(body, registry.settings)
    assert str(refused.value) == str(direct.value) == "detection.cpus[1]: cpuset id 0 appears twice"


def test_refused_bodies_say_why_in_one_line(fake):
    registry, _oar = fake
    with serving(registry) as port:
        assert post(port, b'{"a": "caf\xe9"}') == (
            400, {"error": "the body is refused: not UTF-8 text (byte 0xe9)"})
        status, answer = post(port, b"[" * 100 + b"]" * 100)
        assert status == 400 and answer["error"].endswith(f"deeper than {BODY_DEPTH} levels")


def _exchange(port: int, request: bytes, finish: bool) -> bytes:
    """Send `request` on a raw connection (then end it when `finish`); all the service answers."""
    with socket.create_connection(("127.0.0.1", port), 10) as sock:
        sock.sendall(request)
        if finish:
            sock.shutdown(socket.SHUT_WR)
        sock.settimeout(10)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    return answer


PARTIAL_BODY = b"POST /v1/register HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{}"


def test_a_body_that_trickles_in_is_cut_off(fake, monkeypatch):
    registry, oar = fake
    monkeypatch.setattr(registry_module, "BODY_SECONDS", 0.5)
    with serving(registry) as port:
        answer = _exchange(port, PARTIAL_BODY, finish=False)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert answer.endswith(b'{"error": "the body did not arrive within 0.5 s"}')
    assert oar.calls == []


def test_an_oversized_body_that_trickles_in_is_cut_off_too(fake, monkeypatch):
    registry, _oar = fake
    monkeypatch.setattr(registry_module, "BODY_SECONDS", 0.5)
    length = f"Content-Length: {MAX_BODY + 1}".encode()
    request = PARTIAL_BODY.replace(b"Content-Length: 100", length)
    with serving(registry) as port:
        answer = _exchange(port, request, finish=False)
    assert answer.startswith(b"HTTP/1.1 408 ")


def test_a_body_shorter_than_its_length_is_refused(fake):
    registry, _oar = fake
    with serving(registry) as port:
        answer = _exchange(port, PARTIAL_BODY, finish=True)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert answer.endswith(b'{"error": "the body is shorter than its Content-Length"}')


def test_get_endpoints_need_the_token(fake):
    registry, _oar = fake
    host = new_hostname()
    _register(registry, registration(TOKEN, host, "127.0.0.5"))
    with serving(registry) as port:
        assert get(port, f"/v1/nodes/{host}", None)[0] == 401
        assert get(port, f"/v1/nodes/{host}", "wrong")[0] == 401
        status, answer = get(port, f"/v1/nodes/{host}", TOKEN)
        assert status == 200 and answer["state"] == "Alive" and len(answer["resources"]) == 2
        assert get(port, f"/v1/nodes/{new_hostname()}", TOKEN)[0] == 404
        assert get(port, "/v1/nodes/..%2fetc", TOKEN)[0] == 400
        status, text = get(port, "/v1/hosts", TOKEN)
        assert status == 200 and f"127.0.0.5 {host}" in text.splitlines()


# ---- a name and an address belong to one machine


def clone_of(body: dict, mac: str = "52:54:00:99:99:99") -> dict:
    """The same registration from another machine (another boot MAC)."""
    other = json.loads(json.dumps(body))
    other["detection"]["mac"] = mac
    other["detection"]["interfaces"][0]["mac"] = mac
    return other


def _nothing_written(registry: Registry, oar: FakeOar, rows: list, hosts: str) -> None:
    assert oar.rows == rows
    assert registry.settings.hosts_file.read_text() == hosts


def test_a_name_held_by_another_machine_that_answers_is_refused(fake):
    registry, oar = fake
    registry.answers = lambda address: True
    host = new_hostname()
    body = registration(TOKEN, host, "127.0.0.5")
    _register(registry, body)
    rows, hosts = list(oar.rows), registry.settings.hosts_file.read_text()
    with serving(registry) as port:
        status, answer = post(port, clone_of(body) | {"address": "127.0.0.6"})
    assert status == 409
    assert answer["error"] == (f"{host} is registered by another machine (MAC "
                               f"{body['detection']['mac']}, at 127.0.0.5) that still answers; "
                               "this one has MAC 52:54:00:99:99:99")
    _nothing_written(registry, oar, rows, hosts)


def test_a_name_whose_machine_is_gone_goes_to_the_newcomer(fake):
    registry, oar = fake
    asked = []
    registry.answers = lambda address: asked.append(address) or False
    host = new_hostname()
    body = registration(TOKEN, host, "127.0.0.5")
    _register(registry, body)
    reply = _register(registry, clone_of(body) | {"address": "127.0.0.6"})
    assert asked == ["127.0.0.5"]
    assert f"127.0.0.6 {host}" in reply["hosts"]


def test_a_node_that_rebooted_with_another_address_registers_as_before(fake):
    registry, oar = fake
    registry.answers = lambda address: pytest.fail("the same machine needs no probe")
    host = new_hostname()
    _register(registry, registration(TOKEN, host, "127.0.0.5"))
    reply = _register(registry, registration(TOKEN, host, "127.0.0.7"))
    assert reply["changed"] is False and f"127.0.0.7 {host}" in reply["hosts"]


def test_after_a_server_reboot_every_node_registers_as_before(fake, tmp_path):
    registry, oar = fake
    host = new_hostname()
    body = registration(TOKEN, host, "127.0.0.5")
    _register(registry, body)
    rebooted = Registry(registry.settings, oar, answers=lambda address: True,
                        check=FakeNodes().check)
    assert _register(rebooted, body)["changed"] is False


def test_the_servers_address_is_refused_to_a_node(fake):
    registry, oar = fake
    hosts = registry.settings.hosts_file.read_text()
    with serving(registry) as port:
        status, answer = post(port, registration(TOKEN, new_hostname(), "127.0.0.1"))
    assert status == 409 and answer["error"] == "address 127.0.0.1 is the server's (localhost)"
    _nothing_written(registry, oar, [], hosts)


def test_an_address_another_node_holds_is_refused(fake):
    registry, oar = fake
    holder = new_hostname()
    _register(registry, registration(TOKEN, holder, "127.0.0.5"))
    rows, hosts = list(oar.rows), registry.settings.hosts_file.read_text()
    with serving(registry) as port:
        status, answer = post(port, registration(TOKEN, new_hostname(), "127.0.0.5"))
    assert status == 409
    assert answer["error"] == f"address 127.0.0.5 is held by {holder}, registered and Alive"
    _nothing_written(registry, oar, rows, hosts)


def test_the_address_of_a_node_shut_down_goes_to_the_newcomer(fake):
    registry, oar = fake
    holder, newcomer = new_hostname(), new_hostname()
    _register(registry, registration(TOKEN, holder, "127.0.0.5"))
    oar.set_state(holder, "Absent")  # what a node shutting down does
    reply = _register(registry, registration(TOKEN, newcomer, "127.0.0.5"))
    entries = etchosts.parse_block(reply["hosts"])
    assert entries[newcomer] == "127.0.0.5" and holder not in entries


def test_the_address_is_the_one_the_node_connects_from(fake):
    registry, _oar = fake
    host = new_hostname()
    with serving(registry) as port:
        status, reply = post(port, registration(TOKEN, host, "127.0.0.5"), source="127.0.0.9")
    assert status == 200, reply
    assert etchosts.parse_block(reply["hosts"])[host] == "127.0.0.9"


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS", "BREW"])
def test_methods_the_service_does_not_serve_get_405(fake, method):
    registry, oar = fake
    with serving(registry) as port:
        status, answer = post(port, registration(TOKEN, new_hostname(), "127.0.0.5"),
                              method=method)
    assert status == 405 and answer == {"error": f"method {method} not allowed"}
    assert oar.calls == []


# ----------------------------------------------------------------------------- integration


def _by_host(oar: Oar, hosts: set[str]) -> dict[str, list[OarResource]]:
    found: dict[str, list[OarResource]] = {host: [] for host in hosts}
    for r in oar.resources():
        if r.host in found:
            found[r.host].append(r)
    return found


def _oarnodes_cpusets(host: str) -> list[int]:
    from boot import proc

    out = proc.run(["oarnodes", "-J", host], timeout=60).stdout
    return sorted(int(r["cpuset"]) for r in json.loads(out).values() if r["host"] == host)


@pytest.fixture
def real(oar_server, tmp_path):
    registry = Registry(settings(tmp_path, Path("/etc/oar/oar.conf")), oar_server)
    with serving(registry) as port:
        yield registry, oar_server, port


@pytest.mark.integration
def test_real_oar_three_nodes_then_reregister_then_topology_change(real):
    registry, oar, port = real
    topologies = {new_hostname(): {"cores": 1}, new_hostname(): {"sockets": 2, "cores": 2},
                  new_hostname(): {"sockets": 2, "cores": 2, "threads": 2, "interleaved": True}}
    replies = {}
    for n, (host, topo) in enumerate(topologies.items()):
        status, reply = post(port, registration(TOKEN, host, f"127.0.1.{n + 1}", **topo))
        assert status == 200, reply
        assert reply["changed"] is True
        replies[host] = reply
    for host, expected in zip(topologies, (1, 4, 8), strict=True):
        assert _oarnodes_cpusets(host) == list(range(expected)), host
        assert len(replies[host]["resources"]) == expected
    interleaved = list(topologies)[2]
    rows = sorted(_by_host(oar, {interleaved})[interleaved], key=lambda r: r.core)
    assert [int(r.cpuset) for r in rows] == [0, 2, 4, 6, 1, 3, 5, 7], "socket 0 first, as OAR does"

    # Re-registering (reboot, lost reply) duplicates nothing.
    again = list(topologies)[1]
    before = sorted(r.resource_id for r in _by_host(oar, {again})[again])
    status, reply = post(port, registration(TOKEN, again, "127.0.1.2", sockets=2, cores=2))
    assert status == 200 and reply["changed"] is False
    assert sorted(r.resource_id for r in _by_host(oar, {again})[again]) == before

    # A changed topology replaces the resources (oar-server sets the old ones Dead first).
    status, reply = post(port, registration(TOKEN, again, "127.0.1.2", sockets=1, cores=6))
    assert status == 200 and reply["changed"] is True, reply
    now = _by_host(oar, {again})[again]
    assert sorted(int(r.cpuset) for r in now) == list(range(6))
    assert not set(before) & {r.resource_id for r in now}
    assert _oarnodes_cpusets(again) == list(range(6))
    cores = [r.core for r in oar.resources()]
    assert len(cores) == len(set(cores)), "core ids are unique in the whole cluster"


def _finaud_runs(oar: Oar, host: str, state: str) -> None:
    """OAR's own node checker (finaud, which Almighty runs every FINAUD_FREQUENCY seconds) runs
    now, then oar-server applies its decisions; wait until `host` is in `state`."""
    from boot import proc

    proc.run(["runuser", "-u", "oar", "--", "env", "OARCONFFILE=/etc/oar/oar.conf",
              "/usr/lib/oar/finaud"], check=False, timeout=120)
    proc.run(["runuser", "-u", "oar", "--", "perl", "-MOAR::Tools", "-e",
              'OAR::Tools::notify_tcp_socket("localhost", 6666, "ChState")'], timeout=30)
    oar.wait_for_state(host, state, timeout=60)


@pytest.mark.integration
def test_real_oar_a_node_is_alive_only_once_oar_node_answers_and_comes_back_from_suspected(
        real):
    registry, oar, port = real
    host, address = new_hostname(), "127.0.6.1"
    body = registration(TOKEN, host, address, sockets=2, cores=4)
    status, reply = post(port, body)  # oar-node's sshd is not up yet
    assert status == 200 and reply["state"] == "Absent", reply
    assert "127.0.6.1:6667" in reply["problem"]
    rows = oar.host_resources(host)
    assert sorted(int(r.cpuset) for r in rows) == list(range(8)), "the whole node at once"
    assert {r.state for r in rows} == {"Absent"} and {r.next_state for r in rows} == {"UnChanged"}
    with oar_node_sshd(address):
        status, reply = post(port, body)  # the node registers again once oar-node runs
        assert status == 200 and reply["state"] == "Alive" and reply["problem"] is None, reply
        assert len(oar.wait_for_state(host, "Alive", timeout=60)) == 8
    _finaud_runs(oar, host, "Suspected")  # oar-node was down when OAR's checker ran
    status, reply = post(port, body)  # still down: it stays Suspected, and says why
    assert status == 200 and reply["state"] == "Suspected" and "6667" in reply["problem"]
    assert {r.state for r in oar.host_resources(host)} == {"Suspected"}
    assert json.loads(registry.settings.checks_file.read_text())[host]["ok"] is False
    with oar_node_sshd(address):  # back up: the node's watcher registers again
        status, reply = post(port, body)
        assert status == 200 and reply["state"] == "Alive", reply
        assert len(oar.wait_for_state(host, "Alive", timeout=60)) == 8
    assert json.loads(registry.settings.checks_file.read_text())[host]["ok"] is True


@pytest.mark.integration
def test_real_oar_keeps_a_cores_hyperthreads_in_one_cpuset(oar_server, tmp_path):
    """OAR 2.6's numbering written by the real oarnodesetting, read back, registered again."""
    registry = Registry(replace(settings(tmp_path, Path("/etc/oar/oar.conf")),
                                granularity=Granularity.CORE), oar_server)
    host = new_hostname()
    body = registration(TOKEN, host, "127.0.2.1", cores=2, threads=2)
    with serving(registry) as port:
        status, reply = post(port, body)
        assert status == 200 and reply["changed"] is True, reply
        assert sorted(r.cpuset for r in _by_host(oar_server, {host})[host]) == ["0,2", "1,3"]
        status, again = post(port, body)
        assert status == 200 and again["changed"] is False, again


@pytest.mark.integration
def test_real_oar_twenty_concurrent_registrations(real):
    _registry, oar, port = real
    hosts = [new_hostname() for _ in range(20)]
    results: dict[str, tuple[int, dict]] = {}

    def register(n: int, host: str) -> None:
        results[host] = post(port, registration(TOKEN, host, f"127.0.2.{n + 1}",
                                                sockets=1 + n % 2, cores=2))

    threads = [threading.Thread(target=register, args=(n, h)) for n, h in enumerate(hosts)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert all(results[h][0] == 200 for h in hosts), {h: results[h] for h in hosts}
    found = _by_host(oar, set(hosts))
    for n, host in enumerate(hosts):
        expected = 2 * (1 + n % 2)
        assert sorted(int(r.cpuset) for r in found[host]) == list(range(expected)), host
    every = oar.resources()
    assert len({r.core for r in every}) == len(every), "no core id given twice"
    counts = Counter((r.host, r.cpuset) for r in every)
    assert max(counts.values()) == 1, "every resource exactly once"


@pytest.mark.integration
def test_real_oar_bad_requests_change_nothing(real):
    _registry, oar, port = real
    before = oar.resources()
    for name, (expected, raw) in _bad_bodies(new_hostname()).items():
        status, answer = post(port, raw)
        assert status == expected, f"{name}: {status} {answer}"
    assert oar.resources() == before


@pytest.mark.integration
def test_real_oar_refuses_another_machines_name_and_taken_addresses(real):
    registry, oar, port = real
    host = new_hostname()
    body = registration(TOKEN, host, "127.0.3.1", cores=2)
    status, reply = post(port, body)
    assert status == 200, reply
    before, hosts = oar.resources(), registry.settings.hosts_file.read_text()
    claims = {
        "its name from another machine": clone_of(body) | {"address": "127.0.3.2"},
        "the server's address": registration(TOKEN, new_hostname(), "127.0.0.1"),
        "its address": registration(TOKEN, new_hostname(), "127.0.3.1"),
    }
    for name, claim in claims.items():
        status, answer = post(port, claim)
        assert status == 409, f"{name}: {status} {answer}"
    assert oar.resources() == before
    assert registry.settings.hosts_file.read_text() == hosts
    status, reply = post(port, body)  # the machine itself, again
    assert status == 200 and reply["changed"] is False


@pytest.mark.integration
def test_real_oar_node_endpoint_reports_the_state(real):
    registry, oar, port = real
    host = new_hostname()
    assert get(port, f"/v1/nodes/{host}", TOKEN)[0] == 404
    with oar_node_sshd("127.0.3.9"):
        assert post(port, registration(TOKEN, host, "127.0.3.9", cores=3))[0] == 200
    # The polls' snapshot may be up to SNAPSHOT_SECONDS old (from before the registration)
    # and oar-server applies the state asked when it gets to it: the node polls.
    give_up = time.monotonic() + 30
    while (answer := get(port, f"/v1/nodes/{host}", TOKEN)[1]).get("state") in (None, "Absent"):
        assert time.monotonic() < give_up, answer
        time.sleep(0.5)
    assert sorted(int(r["cpuset"]) for r in answer["resources"]) == [0, 1, 2]
    assert answer["problem"] is None
    # OAR's own checker (finaud, right after oar-server starts) may have suspected it since:
    # it reaches nodes by name, and this host cannot resolve the simulated nodes' names.
    later = registry.clock() + 10
    registry.clock = lambda: later
    answer = get(port, f"/v1/nodes/{host}", TOKEN)[1]
    assert {answer["state"]} == {r.state for r in oar.host_resources(host)} <= {
        "Alive", "Suspected"}


def test_token_is_compared_in_constant_time(monkeypatch):
    import hmac

    from autoconf import registry as module

    seen = []
    real_compare = hmac.compare_digest
    monkeypatch.setattr(module.hmac, "compare_digest",
                        lambda a, b: seen.append((a, b)) or real_compare(a, b))
    with pytest.raises(module.Unauthorized):
        module.check_token({"token": "nope"}, TOKEN)
    assert seen == [(b"nope", TOKEN.encode())]


def test_empty_server_token_accepts_nobody():
    from autoconf import registry as module

    with pytest.raises(module.Unauthorized):
        module.check_token({"token": ""}, "")


# ----------------------------------------------------------------------------- entry point


def test_serve_refuses_to_start_without_a_token(tmp_path, capsys):
    from autoconf.config import Config, write_config
    from autoconf.registry import SERVER_STATE, main

    write_config(Config(token=""), tmp_path)
    (tmp_path / SERVER_STATE).write_text(json.dumps(
        ServerState("oar-server", "10.0.0.1", "10.0.0.0/24").to_json()))
    assert main(["--root", str(tmp_path)]) == 1
    assert "no cluster token" in capsys.readouterr().err


def test_serve_before_the_server_role_ran_says_so(tmp_path, capsys):
    from autoconf.config import Config, write_config
    from autoconf.registry import main

    write_config(Config(token="abc"), tmp_path)
    assert main(["--root", str(tmp_path)]) == 1
    assert "has the server role run?" in capsys.readouterr().err


def test_beacon_announces_the_registry_and_its_hosts_block_on_the_cluster_broadcast(
        fake, monkeypatch):
    from autoconf import beacon, registry

    reg, _oar = fake
    started = []
    monkeypatch.setattr(beacon.BeaconSender, "start", lambda self: started.append(self) or self)
    sender = registry._start_beacon(ServerState("oar-server", "10.0.0.1", "10.0.0.0/24"),
                                    6680, "tok", reg)
    assert started == [sender]
    tag = reg.hosts_block()[1]
    assert json.loads(sender.payload) == {"service": "oar-live", "registry": "10.0.0.1:6680",
                                          "cluster": beacon.cluster_id("tok"),
                                          "hosts": tag.strip('"')}
    assert sender.destination == ("10.0.0.255", beacon.BEACON_PORT)
    assert reg.hosts_changed == sender.kick
    loopback = ServerState("oar-server", "127.0.0.1", "127.0.0.0/8")
    assert registry._start_beacon(loopback, 6680, "tok", reg) is None


def test_a_new_name_is_announced_before_the_node_is_checked_and_made_alive(fake, nodes):
    """Every node learns a new node's name (the beacon) before OAR can start a job on it."""
    registry, _oar = fake
    events = []
    registry.hosts_changed = lambda: events.append(("announced", registry.hosts()))
    check = registry.check
    registry.check = lambda host, address: events.append(("checked", host)) or check(host,
                                                                                     address)
    host = new_hostname()
    answer = _register(registry, registration(TOKEN, host, "127.0.0.7"))
    assert answer["state"] == "Alive"
    assert [e[0] for e in events] == ["announced", "checked"]
    assert f"127.0.0.7 {host}" in events[0][1]
    events.clear()
    _register(registry, registration(TOKEN, host, "127.0.0.7"))
    assert events == [], "registering again, same name and address: nothing to announce"
