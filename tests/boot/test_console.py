"""The console contract: each line other programs read, word for word, and read back the same."""

from __future__ import annotations

import configparser
from pathlib import Path

import pytest

from boot import console
from boot.console import PxeService, Step

UNITS = Path(__file__).resolve().parents[2] / "boot" / "systemd"
NODE = "node-5254004f4c01"


# ---- each line, word for word -------------------------------------------------------------------


def test_the_agents_lines_start_with_one_prefix():
    assert console.agent_started() == "OAR Live: setting up this machine (oar-autoconf boot)"
    assert console.info("keyboard layout us (already set)") == (
        "OAR Live: keyboard layout us (already set)")
    assert console.info("listening on 10.77.0.2:6680", "registry") == (
        "OAR Live: registry: listening on 10.77.0.2:6680")
    assert console.warning("OAR shows x as Suspected") == (
        "OAR Live: warning: OAR shows x as Suspected")
    assert console.error("the node role failed: no route") == (
        "OAR Live: error: the node role failed: no route")


def test_the_server_steps_are_one_table():
    assert console.server_step("postgresql", True, "listening on 10.77.0.2") == (
        "OAR Live: server: postgresql                   changed (listening on 10.77.0.2)")
    assert console.server_step(console.REGISTRATION_SERVICE, False, "10.77.0.2:6680") == (
        "OAR Live: server: registration service         unchanged (10.77.0.2:6680)")
    assert console.server_step("netboot service (PXE)", None, "no medium") == (
        "OAR Live: server: netboot service (PXE)        FAILED (no medium)")
    assert console.server_step("oar-server", True) == (
        "OAR Live: server: oar-server                   changed")


def test_a_nodes_registration_and_its_state_in_oar():
    assert console.registered(NODE, detail="with 2 resources (new or changed); server srv") == (
        f"OAR Live: registered as {NODE} with 2 resources (new or changed); server srv")
    assert console.registered(NODE, again=True) == f"OAR Live: registered again as {NODE}"
    assert console.alive(NODE) == f"OAR Live: {NODE} is Alive in OAR"


def test_the_netboot_announce_names_the_one_interface_served():
    assert console.pxe_announce(PxeService("authoritative", "ens4", "10.77.0.2:6682",
                                           network="10.77.0.0/24")) == (
        "OAR Live: PXE: authoritative DHCP for 10.77.0.0/24 (no other DHCP server answered) on "
        "ens4 only, never on any other interface; TFTP and HTTP on 10.77.0.2:6682")
    assert console.pxe_announce(PxeService("proxy", "ens4", "10.77.0.5:6682",
                                           other_dhcp="10.77.0.1")) == (
        "OAR Live: PXE: proxy-DHCP beside the DHCP server 10.77.0.1 (it gives the addresses) on "
        "ens4 only, never on any other interface; TFTP and HTTP on 10.77.0.5:6682")


def test_the_summary_block_ends_with_the_steps_and_the_time():
    steps = console.steps_line([Step("find server", 1.23), Step("register", 2.5, ok=False)])
    assert steps == "find server 1.2 s, register 2.5 s (failed)"
    assert console.steps_line([]) == "nothing noticeable"
    assert console.summary([("role", "node"), ("hostname", NODE)], steps, 24.6) == [
        "OAR Live " + "-" * 50,
        "  role       node",
        f"  hostname   {NODE}",
        "  steps      find server 1.2 s, register 2.5 s (failed)",
        "  ready in 25 s",
    ]
    assert console.summary([("role", "node")], steps, 7, joined=False)[-1] == (
        "  set up in 7 s; joins the cluster when its server answers")


def test_a_failed_boot_says_why_how_far_and_where_to_look():
    assert console.failed("the server role failed: oar-database --check failed", "nothing "
                          "noticeable") == [
        "OAR Live: error: the server role failed: oar-database --check failed",
        "  steps      nothing noticeable",
        "  see `journalctl -u oar-live-autoconf` and `oar-autoconf status`",
    ]


def test_systemd_starting_the_agent_reads_as_the_agent_started():
    unit = configparser.ConfigParser(interpolation=None)
    unit.read(UNITS / f"{console.AGENT_UNIT}.service")
    starting = f"Starting {console.AGENT_UNIT}.service - {unit['Unit']['Description']}..."
    assert console.AGENT_STARTED.search(starting)
    assert console.AGENT_STARTED.search(console.agent_started())
    assert not console.AGENT_STARTED.search("Welcome to Debian GNU/Linux 12 (bookworm)!")


# ---- read back to the same facts ----------------------------------------------------------------


def test_registrations_and_alive_nodes_read_back():
    log = "\n".join([
        console.registered(NODE, detail="with 2 resources (unchanged); server srv"),
        console.info(f"registering {NODE} (10.77.0.3) with 10.77.0.2:6680"),
        console.registered("node-5254004f4c02", again=True),
        console.alive("node-5254004f4c02"),
    ])
    assert console.registered_hosts(log) == [NODE, "node-5254004f4c02"]
    assert console.alive_hosts(log) == ["node-5254004f4c02"]


@pytest.mark.parametrize("newline", ["\n", "\r\n"], ids=["text", "serial console"])
def test_server_steps_read_back(newline):
    log = newline.join([
        console.server_step("postgresql", True, "listening on 10.77.0.2"),
        console.server_step(console.REGISTRATION_SERVICE, False, "10.77.0.2:6680"),
        console.server_step("netboot service (PXE)", None, "cannot probe (ens4)"),
        console.server_step("oar-server", False),
    ]) + newline
    assert console.server_steps(log) == {"postgresql": "changed",
                                         console.REGISTRATION_SERVICE: "unchanged",
                                         "netboot service (PXE)": "FAILED",
                                         "oar-server": "unchanged"}
    assert console.SERVING.search(log)
    assert not console.SERVING.search(console.server_step("postgresql", True))


@pytest.mark.parametrize("service", [
    PxeService("authoritative", "ens4", "10.77.0.2:6682", network="10.77.0.0/24"),
    PxeService("proxy", "enp0s3", "192.168.1.20:6682", other_dhcp="192.168.1.1"),
])
def test_the_netboot_announce_reads_back(service):
    log = console.info("looking for another DHCP server on ens4 (3 s)", "PXE") + "\n"
    assert console.read_pxe(log + console.pxe_announce(service) + "\n") == service
    assert console.read_pxe(log) is None


def test_the_summary_reads_back():
    steps = [Step("keyboard", 0.1), Step("find server", 1.2), Step("register", 2.3, ok=False)]
    rows = [("role", "node"), ("hostname", NODE), ("address", "10.77.0.3 (ens4)"),
            ("resources", "2 (cpusets 0,1; 1 socket(s), 2 core(s), mem=1 GiB)")]
    for joined in (True, False):
        text = "\n".join(["noise", *console.summary(rows, console.steps_line(steps), 31.2,
                                                    joined), "more noise"])
        assert console.read_summary(text) == console.Summary(dict(rows), steps, 31, joined)
    assert console.read_steps(console.steps_line([])) == []


def test_only_the_last_complete_summary_counts():
    first = console.summary([("role", "node")], "register 1.0 s", 5)
    cut = console.summary([("role", "solo")], "register 2.0 s", 9)[:-1]
    assert console.read_summary("\n".join(first)).seconds == 5
    assert console.read_summary("\n".join(first + cut)) is None
    assert console.read_summary("no summary here") is None


def test_the_error_and_the_end_of_a_boot_read_back():
    text = "\n".join(console.failed("the node role failed: no route", "register 2.0 s"))
    assert console.read_error(text) == "the node role failed: no route"
    assert console.read_error(console.info("error-free line")) is None
    assert console.READY.search("\n".join(console.summary([], "x 1.0 s", 3)))
    waiting = "\n".join(console.summary([], "x 1.0 s", 3, joined=False))
    assert console.WAITING.search(waiting) and not console.READY.search(waiting)


def test_what_images_built_before_printed_still_reads():
    earlier = ("oar-live: registered as node-5254004f4c01 with 2 resources (unchanged); server s\n"
               "oar-live: registered again as node-5254004f4c01\n"
               "oar-live: node-5254004f4c01 is Alive in OAR\n"
               "  server: registration service         changed (10.77.0.2:6680)\n")
    assert console.registered_hosts(earlier) == [NODE, NODE]
    assert console.alive_hosts(earlier) == [NODE]
    assert console.SERVING.search(earlier)
    assert console.server_steps(earlier) == {console.REGISTRATION_SERVICE: "changed"}
    assert all(console.ANY.search(line) for line in earlier.splitlines())


def test_a_server_s_summary_names_its_cluster_page_and_reads_back():
    name, value = console.web_row("10.77.0.2")
    assert name == "web" and value.startswith("http://10.77.0.2/ (cluster page, Monika")
    text = "\n".join(console.summary([("role", "server"), (name, value)], "detection 0.1 s", 40))
    assert console.read_web_page(console.read_summary(text)) == "http://10.77.0.2/"
    node = "\n".join(console.summary([("role", "node")], "detection 0.1 s", 40))
    assert console.read_web_page(console.read_summary(node)) is None
