"""The boot menus rendered from isolinux/menu.yaml: every loader gets every entry, right keys."""

import re
from pathlib import Path

import pytest

from boot import menus

CMDLINE = "boot=live systemd.unified_cgroup_hierarchy=0"


def render(target, **kw):
    kw.setdefault("cmdline", CMDLINE)
    return menus.render(target, "/live/vmlinuz", "/live/initrd.img", **kw)


def syslinux_entries(text):
    """{label: append line} of a syslinux config."""
    found = dict(re.findall(r"^\s*LABEL (\S+)\n(?:.*\n)*?\s*APPEND (.*)$", text, re.M))
    return found


def grub_entries(text):
    return dict(re.findall(r'menuentry "[^"]*" --id (\S+)[^{]*\{\n\s*linux \S+ (.*)\n', text))


@pytest.mark.parametrize("target", ["isolinux", "pxelinux"])
def test_syslinux_menu_has_every_role_with_its_key_and_the_cgroup_setting(target):
    entries = syslinux_entries(render(target))
    for role in ("ask", "solo", "server", "node"):
        assert f"oar.role={role}" in entries[role]
        assert f"oar.role={role}" in entries[f"{role}-serial"]
        assert "systemd.unified_cgroup_hierarchy=0" in entries[role]
        assert entries[role].startswith("initrd=/live/initrd.img ")
    assert entries["solo-serial"].split()[-2] == "console=ttyS0,115200n8"
    assert "console=ttyS0" not in entries["solo"]
    assert "oar.keymap=fr" in entries["ask-fr"]


def test_isolinux_boots_the_default_after_the_timeout_and_listens_on_serial():
    text = render("isolinux", timeout=7)
    assert "DEFAULT ask\n" in text
    assert "TIMEOUT 70\n" in text
    assert text.count("MENU DEFAULT") == 1
    assert text.startswith("# ") and "SERIAL 0 115200" in text
    assert "MENU LABEL ^Laptop" in text
    assert "MENU LABEL ^2. Laptop" in text


def test_grub_menu_matches_the_bios_menu():
    grub = grub_entries(render("grub"))
    bios = syslinux_entries(render("isolinux"))
    assert set(grub) == set(bios)
    for entry_id, append in bios.items():
        assert grub[entry_id] == append.removeprefix("initrd=/live/initrd.img ")
    text = render("grub", default="node-serial")
    assert "set default=node-serial" in text
    assert "--hotkey=l" in text
    assert "BOOTIF" not in text  # only netboot menus pass a boot MAC


def test_network_menus_fetch_the_squashfs_and_name_the_server():
    url = "http://10.0.0.1:8080/oar-live"
    ipxe = menus.render(
        "ipxe",
        f"{url}/vmlinuz",
        f"{url}/initrd.img",
        CMDLINE,
        fetch=f"{url}/filesystem.squashfs",
        server="10.0.0.1",
        default="node",
    )
    assert ipxe.startswith("#!ipxe\n")
    block = ipxe.split(":node\n", 1)[1].split("boot\n", 1)[0]
    assert f"kernel {url}/vmlinuz initrd=initrd.img " in block
    assert f"fetch={url}/filesystem.squashfs" in block
    assert "oar.role=node oar.server=10.0.0.1" in block
    assert f"initrd {url}/initrd.img" in block
    assert "choose --default node --timeout 10000" in ipxe
    pxe = syslinux_entries(
        menus.render("pxelinux", "vmlinuz", "initrd.img", CMDLINE, fetch=f"{url}/x.squashfs")
    )
    assert all(f"fetch={url}/x.squashfs" in line for line in pxe.values())


def test_unknown_default_and_unsafe_values_are_refused():
    with pytest.raises(menus.MenuError, match="default entry 'nope'"):
        render("grub", default="nope")
    with pytest.raises(menus.MenuError, match="oar.server"):
        render("grub", server="1.2.3.4; reboot")
    with pytest.raises(menus.MenuError, match="quotes"):
        render("grub", cmdline='boot=live x="y"')
    with pytest.raises(ValueError):
        render("lilo")


def test_menu_description_errors_name_the_file_and_entry(tmp_path):
    bad = tmp_path / "menu.yaml"
    bad.write_text(
        "entries:\n  - {id: a, label: 'A', keys: {oar.role: ask}}\n  - {id: a, label: B}\n"
    )
    with pytest.raises(menus.MenuError, match=r"entry 2: id 'a' .* repeated"):
        menus.load_menu(bad)
    bad.write_text('entries:\n  - {id: a, label: "say \\"hi\\""}\n')
    with pytest.raises(menus.MenuError, match="entry 1: label"):
        menus.load_menu(bad)
    bad.write_text("entries:\n  - {id: a, label: A}\ndefault: b\n")
    with pytest.raises(menus.MenuError, match="default 'b'"):
        menus.load_menu(bad)


def test_command_line_writes_the_file_and_reports_errors(tmp_path, capsys):
    out = tmp_path / "sub" / "grub.cfg"
    base = ["--target", "grub", "--kernel", "/k", "--initrd", "/i"]
    assert menus.main([*base, "--output", str(out)]) == 0
    assert "linux /k console=tty0 oar.role=ask" in out.read_text()
    assert menus.main([*base, "--default", "x"]) == 2
    assert "boot.menus: default entry 'x'" in capsys.readouterr().err


def test_shipped_menu_file_is_the_default():
    assert Path(__file__).resolve().parents[2] / "isolinux" / "menu.yaml" == menus.MENU_FILE
    menu = menus.load_menu()
    assert [e["id"] for e in menu.entries] == ["ask", "solo", "server", "node"]
