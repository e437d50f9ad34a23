"""Render OAR Live's boot menus (isolinux, grub, pxelinux, iPXE) from isolinux/menu.yaml.

One menu description, four boot loaders: the ISO's BIOS menu (isolinux.cfg), its UEFI menu and
the qcow2 disk's menu (grub.cfg), and the network boot menus (pxelinux.cfg/default, boot.ipxe)
that the build exports and that a server serves to the machines it netboots. Every entry carries
the base kernel line given by the caller plus its oar.* keys (boot/cmdline.md).

    python3 -m boot.menus --target grub --kernel /live/vmlinuz --initrd /live/initrd.img \
        --cmdline "boot=live systemd.unified_cgroup_hierarchy=0" --output grub.cfg

Runs inside the image too: standard library, PyYAML and Jinja2 only.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import jinja2
import yaml

MENU_DIR = Path(__file__).resolve().parent.parent / "isolinux"
MENU_FILE = MENU_DIR / "menu.yaml"

_ID = re.compile(r"^[a-z][a-z0-9_-]*$")
_KEY = re.compile(r"^oar\.[a-z]+$")
_VALUE = re.compile(r"^[A-Za-z0-9_.:/,@+-]+$")
_CMDLINE_WORD = re.compile(r"^[^\s\"';]+$")


class MenuError(Exception):
    """The menu description or an argument is invalid; the message says which and why."""


class Target(StrEnum):
    ISOLINUX = "isolinux"
    GRUB = "grub"
    PXELINUX = "pxelinux"
    IPXE = "ipxe"

    def template(self) -> str:
        return {
            Target.ISOLINUX: "syslinux.cfg.j2",
            Target.PXELINUX: "syslinux.cfg.j2",
            Target.GRUB: "grub.cfg.j2",
            Target.IPXE: "boot.ipxe.j2",
        }[self]


@dataclass(frozen=True)
class Entry:
    """One boot entry: what the user sees and the kernel line it boots."""

    id: str
    label: str
    hotkey: str
    cmdline: str

    @property
    def syslinux_label(self) -> str:
        """The label with syslinux's `^` before the hotkey (added in front if absent)."""
        if not self.hotkey:
            return self.label
        words = [m.start() for m in re.finditer(r"\b\w", self.label)]
        at = next((i for i in words if self.label[i].lower() == self.hotkey.lower()), -1)
        if at < 0:
            at = self.label.lower().find(self.hotkey.lower())
        if at < 0:
            return f"^{self.hotkey} {self.label}"
        return f"{self.label[:at]}^{self.label[at:]}"


@dataclass(frozen=True)
class Menu:
    """menu.yaml, checked."""

    title: str
    timeout: int
    default: str
    console: str
    serial_console: str
    entries: tuple[dict, ...]
    serial_hotkeys: tuple[str, ...]
    keymaps: tuple[str, ...]


def _check_label(label: str, where: str) -> str:
    if not label or any(c in label for c in "\"'\n{}$\\"):
        raise MenuError(f"{where}: label {label!r} is empty or contains quotes, braces, $ or \\")
    return label


def _check_keys(keys: dict, where: str) -> dict[str, str]:
    checked = {}
    for key, value in (keys or {}).items():
        if not _KEY.match(str(key)) or not _VALUE.match(str(value)):
            raise MenuError(f"{where}: {key}={value} is not an oar.* key with a plain value")
        checked[str(key)] = str(value)
    return checked


def load_menu(path: Path = MENU_FILE) -> Menu:
    """Read and check a menu description (ids, labels, hotkeys, oar.* keys)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise MenuError(f"{path}: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list):
        raise MenuError(f"{path}: expected a mapping with an 'entries' list")
    entries = []
    seen: set[str] = set()
    for n, raw in enumerate(data["entries"], 1):
        where = f"{path}: entry {n}"
        entry_id = str(raw.get("id", ""))
        if not _ID.match(entry_id) or entry_id in seen:
            raise MenuError(f"{where}: id {entry_id!r} is missing, malformed or repeated")
        seen.add(entry_id)
        hotkey = str(raw.get("hotkey", ""))
        if len(hotkey) > 1:
            raise MenuError(f"{where}: hotkey {hotkey!r} must be one character")
        entries.append(
            {
                "id": entry_id,
                "label": _check_label(str(raw.get("label", "")), where),
                "hotkey": hotkey,
                "keys": _check_keys(raw.get("keys"), where),
            }
        )
    default = str(data.get("default", entries[0]["id"] if entries else ""))
    if default not in seen:
        raise MenuError(f"{path}: default {default!r} is not an entry id")
    keymaps = tuple(str(k) for k in data.get("keymaps", []))
    for keymap in keymaps:
        if not _VALUE.match(keymap):
            raise MenuError(f"{path}: keymap {keymap!r} is malformed")
    serial_hotkeys = tuple(str(k) for k in data.get("serial_hotkeys", []))
    if serial_hotkeys and len(serial_hotkeys) != len(entries):
        raise MenuError(f"{path}: serial_hotkeys needs one hotkey per entry ({len(entries)})")
    return Menu(
        title=_check_label(str(data.get("title", "OAR Live")), f"{path}: title"),
        timeout=int(data.get("timeout", 10)),
        default=default,
        console=str(data.get("console", "")),
        serial_console=str(data.get("serial_console", "console=ttyS0,115200n8")),
        entries=tuple(entries),
        serial_hotkeys=serial_hotkeys,
        keymaps=keymaps,
    )


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _keys_words(keys: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in keys.items())


def build_entries(
    menu: Menu, cmdline: str, extra_keys: dict[str, str]
) -> tuple[list[Entry], list[Entry]]:
    """The main entries (screen, then serial console) and the keyboard submenu's entries."""
    main, serial = [], []
    hotkeys = menu.serial_hotkeys or ("",) * len(menu.entries)
    for raw, serial_hotkey in zip(menu.entries, hotkeys, strict=True):
        keys = _keys_words({**raw["keys"], **extra_keys})
        main.append(
            Entry(raw["id"], raw["label"], raw["hotkey"], _join(cmdline, menu.console, keys))
        )
        label = f"{serial_hotkey}. {raw['label']} - serial console".lstrip(". ")
        serial.append(
            Entry(
                f"{raw['id']}-serial",
                label,
                serial_hotkey,
                _join(cmdline, menu.serial_console, keys),
            )
        )
    default = next(raw for raw in menu.entries if raw["id"] == menu.default)
    keyboard = [
        Entry(
            f"{menu.default}-{keymap}",
            f"{default['label'].split(' (')[0]} - keyboard {keymap}",
            "",
            _join(
                cmdline,
                menu.console,
                _keys_words({**default["keys"], "oar.keymap": keymap, **extra_keys}),
            ),
        )
        for keymap in menu.keymaps
    ]
    return main + serial, keyboard


def render(
    target: Target | str,
    kernel: str,
    initrd: str,
    cmdline: str = "",
    *,
    menu: Menu | None = None,
    fetch: str | None = None,
    server: str | None = None,
    default: str | None = None,
    timeout: int | None = None,
) -> str:
    """The boot menu for `target` as text.

    `fetch` (network boot) is the URL of filesystem.squashfs for live-boot; `server` adds
    oar.server to every entry; `default` is an entry id (`node`, or `node-serial`).
    """
    target = Target(target)
    menu = menu or load_menu()
    for word in cmdline.split():
        if not _CMDLINE_WORD.match(word):
            raise MenuError(f"kernel command line word {word!r} contains quotes or ';'")
    extra: dict[str, str] = {}
    if server:
        extra = _check_keys({"oar.server": server}, "--server")
    base = _join(cmdline, f"fetch={fetch}" if fetch else "")
    entries, keyboard = build_entries(menu, base, extra)
    chosen = default or menu.default
    if chosen not in {e.id for e in entries}:
        raise MenuError(f"default entry {chosen!r} is not one of {[e.id for e in entries]}")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(MENU_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    return env.get_template(target.template()).render(
        target=target.value,
        title=menu.title,
        timeout=menu.timeout if timeout is None else timeout,
        default=chosen,
        kernel=kernel,
        initrd=initrd,
        initrd_name=initrd.rstrip("/").rsplit("/", 1)[-1],
        entries=entries,
        keymap_entries=keyboard,
        netboot=bool(fetch),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m boot.menus", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--target", required=True, choices=[t.value for t in Target])
    parser.add_argument("--kernel", required=True, help="kernel path or URL as the loader sees it")
    parser.add_argument("--initrd", required=True, help="initrd path or URL as the loader sees it")
    parser.add_argument("--cmdline", default="", help="kernel line shared by every entry")
    parser.add_argument("--fetch", help="network boot: URL of filesystem.squashfs")
    parser.add_argument("--server", help="add oar.server=ADDRESS to every entry")
    parser.add_argument("--default", help="entry id booted after the timeout")
    parser.add_argument("--timeout", type=int, help="seconds before the default entry boots")
    parser.add_argument("--menu", type=Path, default=MENU_FILE, help="menu description (YAML)")
    parser.add_argument("--output", type=Path, help="file to write (default: standard output)")
    args = parser.parse_args(argv)
    try:
        text = render(
            args.target,
            args.kernel,
            args.initrd,
            args.cmdline,
            menu=load_menu(args.menu),
            fetch=args.fetch,
            server=args.server,
            default=args.default,
            timeout=args.timeout,
        )
    except MenuError as err:
        print(f"boot.menus: {err}", file=sys.stderr)
        return 2
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
