"""The console keyboard layout: check the name against what is installed, then apply it.

Debian has two ways, both handled, console-setup first:
  - console-setup (`setupcon`): layouts are XKB layouts (root/usr/share/X11/xkb/symbols/*, from
    xkb-data); the layout goes into /etc/default/keyboard (XKBLAYOUT=) and `setupcon -k --force`
    loads it on the console. The file is what keyboard-setup.service applies at every boot.
  - kbd's `loadkeys` with console-data's keymaps (root/usr/share/keymaps/**/NAME.kmap.gz).
Check then act: when /etc/default/keyboard already names the layout (keyboard-setup.service
applied it at boot) nothing is run and the result says `changed=False`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from boot import proc

XKB_SYMBOLS = Path("usr/share/X11/xkb/symbols")
KBD_KEYMAPS = Path("usr/share/keymaps")
DEFAULT_KEYBOARD = Path("etc/default/keyboard")
SETUPCON = (Path("bin/setupcon"), Path("usr/bin/setupcon"))
LOADKEYS = (Path("bin/loadkeys"), Path("usr/bin/loadkeys"))
# names people type for the console keymap that XKB spells differently
XKB_ALIASES = {"uk": "gb", "azerty": "fr", "qwertz": "de", "fr-latin1": "fr", "fr-latin9": "fr",
               "de-latin1": "de", "be-latin1": "be", "dk-latin1": "dk", "sv-latin1": "se",
               "pt-latin1": "pt", "es-latin1": "es", "no-latin1": "no", "us-acentos": "us"}
# files under symbols/ that are not layouts
_NOT_LAYOUTS = {"inet", "pc", "latin", "parens", "trans", "level2", "level3", "level5", "group",
                "compose", "ctrl", "capslock", "altwin", "keypad", "kpdl", "shift", "terminate",
                "typo", "eurosign", "rupeesign", "nbsp", "olpc", "empty"}  # and every *_vndr

Runner = Callable[..., object]


class KeymapError(Exception):
    """The keymap name is not installed (or no keymap tool is)."""


@dataclass(frozen=True)
class KeyboardResult:
    keymap: str  # the name as asked
    layout: str  # what was applied (XKB layout or kbd keymap name)
    changed: bool
    tool: str  # "setupcon", "loadkeys" or "" when nothing ran

    def describe(self) -> str:
        if not self.changed:
            return f"keyboard layout {self.layout} (already set)"
        return f"keyboard layout {self.layout} applied with {self.tool}"


def _exists(root: Path, candidates: tuple[Path, ...]) -> bool:
    return any((root / c).exists() for c in candidates)


def xkb_layouts(root: Path = Path("/")) -> frozenset[str]:
    """XKB layout names that console-setup can load (empty without setupcon)."""
    if not _exists(root, SETUPCON):
        return frozenset()
    directory = root / XKB_SYMBOLS
    try:
        return frozenset(p.name for p in directory.iterdir()
                         if p.is_file() and p.name not in _NOT_LAYOUTS and "_" not in p.name)
    except OSError:
        return frozenset()


def kbd_keymaps(root: Path = Path("/")) -> frozenset[str]:
    """console-data keymap names that loadkeys can load (empty without loadkeys)."""
    if not _exists(root, LOADKEYS):
        return frozenset()
    names = set()
    for path in (root / KBD_KEYMAPS).glob("**/*map*"):
        name = re.sub(r"\.(k?map)(\.gz)?$", "", path.name)
        if name != path.name and "include" not in path.parts:
            names.add(name)
    return frozenset(names)


def available_keymaps(root: Path = Path("/")) -> frozenset[str]:
    """Every name `apply_keymap` accepts on this machine (including the usual aliases)."""
    xkb = xkb_layouts(root)
    aliases = {alias for alias, layout in XKB_ALIASES.items() if layout in xkb}
    return xkb | aliases | kbd_keymaps(root)


def check_keymap(name: str, root: Path = Path("/")) -> str | None:
    """None when `name` can be applied here, else the reason (for the prompt to show)."""
    available = available_keymaps(root)
    if not available:
        return "no console keymap tool is installed (console-setup or kbd)"
    if name in available:
        return None
    close = difflib.get_close_matches(name, sorted(available), n=5, cutoff=0.5)
    return f"no keymap named {name!r}" + (f" (perhaps: {', '.join(close)})" if close else "")


def current_layout(root: Path = Path("/")) -> str | None:
    """XKBLAYOUT from /etc/default/keyboard, or None."""
    try:
        text = (root / DEFAULT_KEYBOARD).read_text()
    except OSError:
        return None
    match = re.search(r'^\s*XKBLAYOUT\s*=\s*"?([^"\n]*)"?\s*$', text, re.MULTILINE)
    return match.group(1).strip() if match else None


def write_default_keyboard(layout: str, root: Path = Path("/")) -> None:
    """Set XKBLAYOUT (and clear XKBVARIANT) in /etc/default/keyboard, keeping the rest."""
    path = root / DEFAULT_KEYBOARD
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        lines = ['XKBMODEL="pc105"', 'XKBOPTIONS=""', 'BACKSPACE="guess"']
    settings = {"XKBLAYOUT": layout, "XKBVARIANT": ""}
    out = []
    for line in lines:
        key = line.split("=", 1)[0].strip()
        if key in settings:
            out.append(f'{key}="{settings.pop(key)}"')
        else:
            out.append(line)
    out += [f'{key}="{value}"' for key, value in settings.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")


def apply_keymap(name: str, root: Path = Path("/"), run: Runner = proc.run) -> KeyboardResult:
    """Load keymap `name` on the console; KeymapError when it is not installed.

    Raises proc.CommandError when the tool fails (e.g. no console to load it into).
    """
    reason = check_keymap(name, root)
    if reason is not None:
        raise KeymapError(reason)
    xkb = xkb_layouts(root)
    layout = name if name in xkb else XKB_ALIASES.get(name)
    if layout in xkb:
        if current_layout(root) == layout:
            return KeyboardResult(name, layout, changed=False, tool="")
        write_default_keyboard(layout, root)
        run(["setupcon", "-k", "--force"])
        return KeyboardResult(name, layout, changed=True, tool="setupcon")
    if current_layout(root) == name:
        return KeyboardResult(name, name, changed=False, tool="")
    run(["loadkeys", name])
    write_default_keyboard(name, root)  # remembered for later checks (and X if it is a layout)
    return KeyboardResult(name, name, changed=True, tool="loadkeys")
