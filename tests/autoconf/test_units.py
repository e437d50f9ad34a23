"""Each role masks, for this boot, the OAR units of the role it does not have."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from autoconf import units
from autoconf.agent import Console, boot
from autoconf.config import Role
from tests.autoconf import fakeroot
from tests.autoconf.fakeroot import build_root
from tests.autoconf.test_agent import keymaps


class Systemctl:
    """systemctl as far as masking goes: links /run/systemd/system/UNIT to /dev/null."""

    def __init__(self, root: Path) -> None:
        self.root, self.calls = root, []

    def __call__(self, argv, **kw):
        self.calls.append(list(argv))
        assert argv[:3] == ["systemctl", "mask", "--runtime"], argv
        for unit in argv[3:]:
            (self.root / units.RUNTIME_UNITS / unit).symlink_to("/dev/null")


@pytest.fixture
def booted(tmp_path):
    (tmp_path / units.RUNTIME_UNITS).mkdir(parents=True)
    return tmp_path


@pytest.mark.parametrize("role, expected", [
    (Role.NODE, ["oar-server.service", "oar-accounting.timer"]),
    (Role.SERVER, ["oar-node.service", "oar-nodecheck.timer"]),
    (Role.SOLO, []),
])
def test_a_role_masks_the_other_roles_units_once(booted, role, expected):
    systemctl = Systemctl(booted)
    assert units.mask_unwanted(role, booted, systemctl) == expected
    assert [units.masked(u, booted) for u in units.SERVER_UNITS + units.NODE_UNITS] == [
        u in expected for u in units.SERVER_UNITS + units.NODE_UNITS]
    calls = len(systemctl.calls)
    assert units.mask_unwanted(role, booted, systemctl) == []  # already masked: unchanged
    assert len(systemctl.calls) == calls


def test_a_node_never_masks_its_own_units_nor_a_server_its_own():
    assert not set(units.unwanted(Role.NODE)) & set(units.NODE_UNITS)
    assert not set(units.unwanted(Role.SERVER)) & set(units.SERVER_UNITS)
    assert "oar-server.service" in units.unwanted(Role.NODE)


def test_a_unit_file_in_run_is_not_a_mask(booted):
    (booted / units.RUNTIME_UNITS / "oar-server.service").write_text("[Unit]\n")
    assert not units.masked("oar-server.service", booted)


def test_nothing_is_masked_without_systemd(tmp_path):
    assert units.mask_unwanted(Role.NODE, tmp_path, lambda *a, **k: pytest.fail("ran")) == []


def test_the_boot_masks_before_the_role_runs_and_says_so(tmp_path):
    root = build_root(tmp_path / "root", fakeroot.two_sockets_two_cores())
    (root / units.RUNTIME_UNITS).mkdir(parents=True)
    systemctl = Systemctl(root)
    seen = []

    def node(config, detection):
        seen.append(units.masked("oar-server.service", root))
        return detection.hostname

    out = io.StringIO()
    console = Console(root=root, cmdline="oar.role=node oar.server=10.0.0.1 oar.timeout=0",
                      out=out, server_handle=lambda *a: pytest.fail("server role run"),
                      node_handle=node, find_server=lambda config, wait: None,
                      apply_keymap=keymaps([]), run=systemctl)
    boot(console)
    assert seen == [True], "oar-server is masked before the node role starts anything"
    assert ("not this machine's role, masked for this boot: oar-server.service, "
            "oar-accounting.timer") in out.getvalue()
