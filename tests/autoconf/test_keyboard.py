"""Console keyboard layout: validated against what is installed, applied only when it differs."""

import pytest

from autoconf.keyboard import (
    KeymapError,
    apply_keymap,
    available_keymaps,
    check_keymap,
    current_layout,
)

# a sample of Debian bookworm's xkb-data symbols/ (layouts and the include files beside them)
XKB_FILES = ["us", "fr", "de", "gb", "be", "ch", "latam", "pc", "inet", "level3", "latin",
             "compose", "sun_vndr", "ctrl"]
BOOKWORM_DEFAULT_KEYBOARD = (
    "# KEYBOARD CONFIGURATION FILE\n\n# Consult the keyboard(5) manual page.\n\n"
    'XKBMODEL="pc105"\nXKBLAYOUT="us"\nXKBVARIANT=""\nXKBOPTIONS=""\n\nBACKSPACE="guess"\n')


class Recorder:
    def __init__(self):
        self.calls = []

    def __call__(self, argv, **kw):
        self.calls.append(list(argv))


def console_setup_root(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/setupcon").write_text("#!/bin/sh\n")
    symbols = tmp_path / "usr/share/X11/xkb/symbols"
    symbols.mkdir(parents=True)
    for name in XKB_FILES:
        (symbols / name).write_text("default xkb_symbols \"basic\" {};\n")
    (tmp_path / "etc/default").mkdir(parents=True)
    (tmp_path / "etc/default/keyboard").write_text(BOOKWORM_DEFAULT_KEYBOARD)
    return tmp_path


def kbd_root(tmp_path):
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/loadkeys").write_text("#!/bin/sh\n")
    for rel in ("i386/azerty/fr-latin1.kmap.gz", "i386/qwerty/us.kmap.gz",
                "i386/qwertz/de.kmap.gz", "i386/include/qwerty-layout.inc.gz"):
        path = tmp_path / "usr/share/keymaps" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x1f\x8b")
    return tmp_path


def test_console_setup_layouts_exclude_include_files(tmp_path):
    names = available_keymaps(console_setup_root(tmp_path))
    assert {"us", "fr", "de", "gb", "uk", "latam"} <= names
    assert not names & {"pc", "inet", "level3", "latin", "sun_vndr"}


def test_applying_a_new_layout_writes_the_file_and_runs_setupcon(tmp_path):
    root = console_setup_root(tmp_path)
    run = Recorder()
    result = apply_keymap("fr", root, run=run)
    assert (result.layout, result.changed, result.tool) == ("fr", True, "setupcon")
    assert run.calls == [["setupcon", "-k", "--force"]]
    text = (root / "etc/default/keyboard").read_text()
    assert 'XKBLAYOUT="fr"' in text and 'XKBMODEL="pc105"' in text and "# KEYBOARD" in text
    assert current_layout(root) == "fr"


def test_the_same_layout_again_changes_nothing(tmp_path):
    root = console_setup_root(tmp_path)
    run = Recorder()
    apply_keymap("de", root, run=run)
    again = apply_keymap("de", root, run=run)
    assert again.changed is False and len(run.calls) == 1
    assert "already set" in again.describe()


def test_the_default_us_on_a_fresh_image_runs_nothing(tmp_path):
    run = Recorder()
    assert apply_keymap("us", console_setup_root(tmp_path), run=run).changed is False
    assert run.calls == []


def test_uk_is_applied_as_xkb_gb(tmp_path):
    root = console_setup_root(tmp_path)
    assert apply_keymap("uk", root, run=Recorder()).layout == "gb"
    assert current_layout(root) == "gb"


def test_unknown_keymap_is_refused_with_suggestions_and_nothing_runs(tmp_path):
    root = console_setup_root(tmp_path)
    run = Recorder()
    assert "perhaps: fr" in check_keymap("fx", root)
    with pytest.raises(KeymapError, match="no keymap named 'klingon'"):
        apply_keymap("klingon", root, run=run)
    assert run.calls == [] and current_layout(root) == "us"


def test_loadkeys_with_console_data_keymaps(tmp_path):
    root = kbd_root(tmp_path)
    assert available_keymaps(root) == {"fr-latin1", "us", "de"}
    run = Recorder()
    result = apply_keymap("fr-latin1", root, run=run)
    assert run.calls == [["loadkeys", "fr-latin1"]] and result.tool == "loadkeys"
    assert apply_keymap("fr-latin1", root, run=run).changed is False
    assert len(run.calls) == 1


def test_no_keymap_tool_installed(tmp_path):
    assert "no console keymap tool" in check_keymap("us", tmp_path)
    with pytest.raises(KeymapError):
        apply_keymap("us", tmp_path, run=Recorder())
