"""The boot flow on fake machines: what the console shows and what the roles are asked to do."""

import functools
import io
import json
import os
import pty
import select
import threading
import time
from dataclasses import replace

import pytest

from autoconf import keyboard, timing
from autoconf.agent import Console, boot
from autoconf.config import Role, read_config
from autoconf.keyboard import KeyboardResult
from autoconf.outcome import Pending
from boot import console as lines
from tests.autoconf import fakeroot
from tests.autoconf.fakeroot import FakeNic, build_root


class Roles:
    """Stand-ins for autoconf.server.handle / autoconf.node.handle that record their calls."""

    def __init__(self, fail=None):
        self.calls = []
        self.fail = fail

    def server(self, config, detection):
        self.calls.append(("server", config, detection))
        if self.fail == "server":
            raise RuntimeError("oar-database --check failed (exit 1)")
        return "server"

    def node(self, config, detection):
        self.calls.append(("node", config, detection))
        return detection.hostname


def keymaps(calls):
    def apply(name, root):
        calls.append(name)
        return KeyboardResult(name, name, changed=name != "us", tool="setupcon")

    return apply


def make_console(tmp_path, cmdline, roles, found=None, **kw):
    root = build_root(tmp_path / "root", fakeroot.two_sockets_two_cores())
    out = io.StringIO()
    console = Console(root=root, cmdline=cmdline, out=out, server_handle=roles.server,
                      node_handle=roles.node, find_server=lambda config, wait: found,
                      apply_keymap=keymaps([]), **kw)
    return console, out


def test_an_oar_26_image_shows_one_resource_per_core_with_its_hyperthreads(tmp_path):
    root = build_root(tmp_path / "root", fakeroot.one_socket_four_cores_ht())
    (root / "etc/oar-live").mkdir(parents=True)
    (root / "etc/oar-live/oar-version").write_text("2.6\n")
    out = io.StringIO()
    roles = Roles()
    console = Console(root=root, cmdline="oar.role=server oar.timeout=0", out=out,
                      server_handle=roles.server, node_handle=roles.node,
                      find_server=lambda config, wait: None, apply_keymap=keymaps([]))
    assert boot(console) == 0
    assert "resources  4 (cpusets 0,4 1,5 2,6 3,7; 1 socket(s), 4 core(s)" in out.getvalue()


def test_autoconf_off_does_nothing_but_say_so(tmp_path):
    roles = Roles()
    console, out = make_console(tmp_path, "quiet oar.autoconf=0 oar.role=server", roles)
    assert boot(console) == 0
    assert roles.calls == []
    assert "automatic configuration is off" in out.getvalue()
    assert read_config(console.root).autoconf is False


def test_server_role_from_the_kernel_line(tmp_path):
    roles = Roles()
    console, out = make_console(tmp_path, "oar.role=server oar.timeout=0", roles)
    assert boot(console) == 0
    assert [c[0] for c in roles.calls] == ["server"]
    config, detection = roles.calls[0][1:]
    assert config.role is Role.SERVER and detection.hostname == "node-525400123456"
    screen = out.getvalue()
    assert "role       server" in screen
    assert "address    10.0.0.5 (eth0)" in screen
    assert "resources  4 (cpusets 0 1 2 3; 2 socket(s), 4 core(s), mem=16 GiB)" in screen
    saved = json.loads((console.root / "run/oar-live/config.json").read_text())
    assert saved["role"] == "server" and saved["sources"]["role"] == "cmdline"


def test_solo_is_a_server_then_a_node_registering_with_it(tmp_path):
    roles = Roles()
    console, out = make_console(tmp_path, "oar.role=solo oar.timeout=0", roles)
    assert boot(console) == 0
    assert [c[0] for c in roles.calls] == ["server", "node"]
    node_config = roles.calls[1][1]
    assert node_config.server == "10.0.0.5" and node_config.server_endpoint()[1] == 6680
    assert "hostname   node-525400123456" in out.getvalue()


def test_auto_becomes_a_node_when_a_server_answers(tmp_path):
    roles = Roles()
    console, out = make_console(tmp_path, "oar.role=auto oar.timeout=0", roles,
                                found="10.0.0.1:6680")
    assert boot(console) == 0
    assert [c[0] for c in roles.calls] == ["node"]
    saved = read_config(console.root)
    assert saved.role is Role.NODE and saved.server == "10.0.0.1:6680"
    assert saved.source("role") == "auto"
    assert "server     10.0.0.1:6680" in out.getvalue()


def test_auto_becomes_solo_when_nobody_answers(tmp_path):
    roles = Roles()
    console, out = make_console(tmp_path, "oar.role=auto oar.timeout=0", roles, found=None)
    assert boot(console) == 0
    assert [c[0] for c in roles.calls] == ["server", "node"]
    assert "no server answered" in out.getvalue()
    assert read_config(console.root).role is Role.SOLO


def test_bad_kernel_keys_are_shown_and_the_boot_goes_on(tmp_path):
    roles = Roles()
    console, out = make_console(tmp_path, "oar.role=server oar.timeout=soon oar.colour=red",
                                roles)
    assert boot(console) == 0
    screen = out.getvalue()
    assert "warning: kernel command line: oar.timeout=soon" in screen
    assert "unknown key oar.colour" in screen
    assert roles.calls[0][1].timeout == 10


def test_a_failing_role_is_one_sentence_and_exit_1(tmp_path):
    roles = Roles(fail="server")
    console, out = make_console(tmp_path, "oar.role=server oar.timeout=0", roles)
    assert boot(console) == 1
    screen = out.getvalue()
    assert "error: the server role failed: oar-database --check failed (exit 1)" in screen
    assert "Traceback" not in screen


def test_the_summary_says_which_step_took_the_time(tmp_path, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(timing.BOOT, "clock", lambda: now[0])

    class SlowRegistration(Roles):
        def node(self, config, detection):
            with timing.step("register"):
                now[0] += 2.3
            return super().node(config, detection)

    console, out = make_console(tmp_path, "oar.role=node oar.server=10.0.0.1 oar.timeout=0",
                                SlowRegistration())
    assert boot(console) == 0
    summary = lines.read_summary(out.getvalue())
    assert summary is not None and summary.joined, out.getvalue()
    assert summary.steps == [lines.Step("register", 2.3)], summary.steps


def test_a_node_whose_server_is_not_up_yet_boots_on_and_says_who_finishes(tmp_path):
    class NoServerYet(Roles):
        def node(self, config, detection):
            raise Pending("no OAR Live server answered yet: oar-live-node keeps looking")

    console, out = make_console(tmp_path, "oar.role=node oar.timeout=0", NoServerYet())
    assert boot(console) == 0, "machines switched on together: the expected path, no failure"
    screen = out.getvalue()
    assert "OAR Live: no OAR Live server answered yet: oar-live-node keeps looking" in screen
    summary = lines.read_summary(screen)
    assert "error" not in screen and summary is not None and not summary.joined, screen


def test_a_failed_boot_shows_the_steps_it_went_through(tmp_path, monkeypatch):
    now = [0.0]
    monkeypatch.setattr(timing.BOOT, "clock", lambda: now[0])

    class FailingDatabase(Roles):
        def server(self, config, detection):
            with timing.step("database"):
                now[0] += 1.5
            with timing.step("oar-server"):
                now[0] += 0.4
                raise RuntimeError("oar-server did not start")

    console, out = make_console(tmp_path, "oar.role=server oar.timeout=0", FailingDatabase())
    assert boot(console) == 1
    screen = out.getvalue().splitlines()
    error = [i for i, line in enumerate(screen) if lines.ERROR.match(line)]
    assert error and screen[error[0] + 1].startswith("  steps "), screen
    assert lines.read_steps(screen[error[0] + 1].removeprefix("  steps")) == [
        lines.Step("database", 1.5), lines.Step("oar-server", 0.4, ok=False)]


def test_a_machine_that_cannot_be_described_stops_before_the_role(tmp_path):
    roles = Roles()
    console, out = make_console(tmp_path, "oar.role=node oar.timeout=0", roles)
    (console.root / "proc/meminfo").write_text("")
    assert boot(console) == 1
    assert roles.calls == [] and "cannot describe this machine" in out.getvalue()


def test_keymap_from_the_kernel_line_is_applied_without_asking(tmp_path):
    roles, applied = Roles(), []
    console, out = make_console(tmp_path, "oar.role=server oar.keymap=de", roles)
    console.apply_keymap = keymaps(applied)
    assert boot(console) == 0
    assert applied == ["de"]
    assert "keyboard layout de applied with setupcon" in out.getvalue()


def test_unknown_keymap_warns_and_keeps_the_layout(tmp_path):
    roles = Roles()
    console, out = make_console(tmp_path, "oar.role=server oar.keymap=zz oar.timeout=0", roles)
    (console.root / "bin").mkdir()
    (console.root / "bin/setupcon").write_text("#!/bin/sh\n")  # console-setup is installed
    (console.root / "usr/share/X11/xkb/symbols").mkdir(parents=True)
    for name in ("us", "fr", "de"):
        (console.root / "usr/share/X11/xkb/symbols" / name).write_text("")
    layout = console.root / "etc/default/keyboard"
    layout.parent.mkdir(parents=True, exist_ok=True)
    layout.write_text('XKBMODEL="pc105"\nXKBLAYOUT="fr"\n')
    ran = []
    console.apply_keymap = functools.partial(keyboard.apply_keymap,
                                             run=lambda argv, **kw: ran.append(argv))
    assert boot(console) == 0
    assert ("keyboard layout zz: no keymap named 'zz'" in out.getvalue()
            and "keeping the current layout" in out.getvalue())
    assert ran == [] and layout.read_text() == 'XKBMODEL="pc105"\nXKBLAYOUT="fr"\n'


@pytest.mark.spawns  # a real pty
def test_prompts_on_the_console_keyboard_then_role(tmp_path):
    roles, applied = Roles(), []
    root = build_root(tmp_path / "root", fakeroot.two_sockets_two_cores())
    (root / "bin").mkdir()
    (root / "bin/setupcon").write_text("")
    (root / "usr/share/X11/xkb/symbols").mkdir(parents=True)
    for name in ("us", "fr", "de"):
        (root / "usr/share/X11/xkb/symbols" / name).write_text("")
    master, slave = pty.openpty()
    out = io.StringIO()
    console = Console(root=root, cmdline="oar.timeout=30", tty=slave, out=out,
                      server_handle=roles.server, node_handle=roles.node,
                      apply_keymap=keymaps(applied))
    result = []
    thread = threading.Thread(target=lambda: result.append(boot(console)), daemon=True)
    thread.start()
    screen = ""
    try:
        for wanted, keys in (("Keyboard layout [us]", "xx\r"), ("no keymap named 'xx'", "fr\r"),
                             ("Role of this machine [auto]", "server\r")):
            end = time.monotonic() + 5
            while wanted not in screen:
                assert time.monotonic() < end, screen
                if select.select([master], [], [], 0.2)[0]:
                    screen += os.read(master, 4096).decode(errors="replace")
            os.write(master, keys.encode())
        thread.join(10)
        assert result == [0]
    finally:
        os.close(master)
        os.close(slave)
    assert applied == ["fr"]
    assert [c[0] for c in roles.calls] == ["server"]
    saved = read_config(root)
    assert (saved.keymap, saved.source("keymap")) == ("fr", "prompt")
    assert (saved.role, saved.source("role")) == (Role.SERVER, "prompt")


def test_auto_asks_discovery_without_prompting(tmp_path, monkeypatch):
    """Role auto uses autoconf.discover.find_server (beacon, DHCP, oar.server), never its prompt."""
    import sys
    import types

    calls = []

    class Found:
        address = "10.0.0.9:6680"

    def find_server(config, root, *, beacon_timeout, ask):
        calls.append((root, beacon_timeout, ask))
        return Found()

    monkeypatch.setitem(sys.modules, "autoconf.discover",
                        types.SimpleNamespace(find_server=find_server))
    roles = Roles()
    console, out = make_console(tmp_path, "oar.role=auto oar.timeout=0", roles)
    console.find_server = None
    assert boot(console) == 0
    assert calls == [(console.root, 6.0, False)]
    assert read_config(console.root).server == "10.0.0.9:6680"
    assert [c[0] for c in roles.calls] == ["node"]


def test_the_cmdline_option_reaches_detection_and_the_netboot_menus(tmp_path, monkeypatch,
                                                                    capsys):
    """`oar-autoconf boot --cmdline` is the kernel line of the whole boot, not root/proc/cmdline:
    its BOOTIF picks the boot interface and its console the netboot menus' default entry."""
    from autoconf import agent, server
    from boot.pxe import configure as pxe
    from boot.pxe import dhcpprobe
    from tests.autoconf.test_server import FakeSystem, server_root
    from tests.boot.pxe.test_pxe import fake_image

    machine = replace(fakeroot.two_sockets_two_cores(), cmdline="quiet", nics=(
        FakeNic("eth0", "52:54:00:00:00:0a", ("192.168.1.5/24",)),
        FakeNic("eth1", "52:54:00:00:00:0b", ("10.66.0.1/24",)),
    ))  # fmt: skip
    root = fake_image(server_root(build_root(tmp_path, machine)))
    monkeypatch.setattr(dhcpprobe, "discover", lambda iface, seconds: [])
    real_handle = server.handle

    def handle(config, detection, root, cmdline):
        return real_handle(config, detection, root, FakeSystem(), cmdline=cmdline)

    monkeypatch.setattr(server, "handle", handle)
    kernel_line = ("boot=live console=tty0 console=ttyS0,115200n8 oar.role=server oar.pxe=1 "
                   "oar.net=10.66.0.0/24 oar.keymap=us BOOTIF=01-52-54-00-00-00-0a")
    assert agent.main(["--root", str(root), "--cmdline", kernel_line]) == 0
    assert "address    10.66.0.1 (eth0)" in capsys.readouterr().out  # eth1 without BOOTIF
    state = json.loads((root / "run/oar-live/server.json").read_text())
    assert state["detection_hostname"] == "node-52540000000a"
    menu = (root / pxe.STATE_DIR / "tftp/pxelinux.cfg/default").read_text()
    assert "DEFAULT node-serial" in menu and "oar.server=10.66.0.1" in menu
