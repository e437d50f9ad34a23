"""The agent's effective configuration: defaults < image YAML < medium YAML < kernel `oar.*` keys.

Each setting is one row of SETTINGS (name, parser, default, doc text): the row parses every
layer's text, gives the Config field its default and writes boot/cmdline.md's table.

Every layer is user input, so nothing here raises on it: an unknown key or a bad value becomes
one warning line (the agent prints it on the console) and the value from the layer below is kept
(the built-in default when no lower layer set it). Prompt answers are the last layer; the agent
adds them with `Config.answered()`. The result is written once to /run/oar-live/config.json,
which every later stage reads with `read_config()`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from boot import bounded
from boot.cmdline import cmdline_params
from boot.netif import IFNAME_RE

REGISTRY_PORT = 6680  # tcp: the registration service (autoconf.registry)
BEACON_PORT = 6681  # udp: the discovery beacon (autoconf.beacon)

IMAGE_CONFIG = Path("etc/oar-live/config.yaml")  # written into the image at build time
MEDIUM_CONFIG = Path("run/live/medium/oar-live.yaml")  # on the boot medium, editable by users
CONFIG_JSON = Path("run/oar-live/config.json")
MAX_CONFIG_BYTES = 64 * 1024  # an image or medium config: `key: value` lines, well under 1 KiB

MAX_TIMEOUT = 3600
MAX_NBMIN = 100_000


class Role(StrEnum):
    ASK = "ask"
    SERVER = "server"
    NODE = "node"
    SOLO = "solo"
    AUTO = "auto"


class Web(StrEnum):
    """Where the server's web tools (cluster page, Monika, Drawgantt, REST API) answer."""

    CLUSTER = "cluster"  # the cluster address and localhost
    ALL = "all"  # every interface of the server
    OFF = "off"  # Apache is not started


class Source(StrEnum):
    """Where a setting's value came from (shown by `oar-autoconf config`)."""

    DEFAULT = "default"
    IMAGE = "image"
    MEDIUM = "medium"
    CMDLINE = "cmdline"
    PROMPT = "prompt"
    AUTO = "auto"  # resolved by the agent itself (role `auto`: the beacon answered or not)


class ConfigError(Exception):
    """config.json is missing or unreadable (later stages cannot guess the boot's decisions)."""


def _has_port(server: str) -> bool:
    if server.startswith("["):
        return "]:" in server
    return server.count(":") == 1


# ---- value parsers: text -> value, or ValueError with the reason a user reads -----------------

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                          r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
_TOKEN_RE = re.compile(r"^[\x21-\x7e]{1,256}$")


def _role(text: str) -> Role:
    try:
        return Role(text.lower())
    except ValueError:
        raise ValueError(f"not one of {', '.join(r.value for r in Role)}") from None


def _server(text: str) -> str:
    host, port = text, ""
    if _has_port(text):
        host, _, port = text.rpartition(":")
        if not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError("the port must be a number from 1 to 65535")
    bare = host.strip("[]")
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        if host.startswith("[") or not _HOSTNAME_RE.match(bare):
            raise ValueError("not an IP address, IP:PORT or host name") from None
    return text


def _keymap(text: str) -> str:
    if not _NAME_RE.match(text) or len(text) > 64:
        raise ValueError("not a keymap name")
    return text


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.strip().isdigit() or not low <= int(text) <= high:
            raise ValueError(f"not a whole number from {low} to {high}")
        return int(text)

    return parse


def _boolean(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "yes", "true", "on"):
        return True
    if lowered in ("0", "no", "false", "off"):
        return False
    raise ValueError("not 0 or 1")


def _web(text: str) -> Web:
    try:
        return Web(text.lower())
    except ValueError:
        raise ValueError(f"not one of {', '.join(w.value for w in Web)}") from None


def _token(text: str) -> str:
    if not _TOKEN_RE.match(text):
        raise ValueError("a token is 1 to 256 printable characters without spaces")
    return text


def _net(text: str) -> str:
    if "/" in text:
        try:
            return str(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError("not a CIDR network such as 10.0.0.0/24") from None
    if not IFNAME_RE.match(text):
        raise ValueError("not an interface name or a CIDR network")
    return text


@dataclass(frozen=True)
class Setting:
    """One agent setting: its `oar.NAME` key, how its text is read, its default, its doc row."""

    name: str
    parse: Callable[[str], Any]  # text -> value, or ValueError with the reason a user reads
    default: Any
    values: str  # what a user may write (boot/cmdline.md's "values" column)
    help: str  # what it does (the "meaning" column)

    @property
    def bare_means(self) -> str | None:
        """What a bare `oar.NAME` (no `=value`) stands for: 1 for an on/off setting."""
        return "1" if self.parse is _boolean else None


SETTINGS: dict[str, Setting] = {s.name: s for s in (
    Setting("role", _role, Role.ASK, "`ask`, `server`, `node`, `solo`, `auto`",
            "`solo`: server and node on one machine (the laptop case); `auto`: node if a "
            "server answers on the network within the timeout, else solo"),
    Setting("server", _server, None, "IP, IP:port or host name",
            "where a node registers; the server writes it into the PXE menus it serves "
            "(`boot.menus --server`)"),
    Setting("keymap", _keymap, "us", "console keymap (`us`, `fr`, `de`, ...)",
            "skips the keyboard prompt (the menu's \"Keyboard layout\" submenu)"),
    Setting("timeout", _integer(0, MAX_TIMEOUT), 10, "seconds",
            "how long each prompt waits before its default (0 = never ask)"),
    Setting("nbmin", _integer(0, MAX_NBMIN), 1, "integer",
            "the server reports the cluster ready once this many nodes are Alive"),
    Setting("token", _token, "", "string",
            "cluster secret; the image's is generated at build time "
            "(`/etc/oar-live/config.yaml`)"),
    Setting("pxe", _boolean, False, "`0` or `1`",
            "the server also netboots other machines as nodes"),
    Setting("net", _net, None, "interface name or CIDR",
            "the cluster network, when the machine has several"),
    Setting("web", _web, Web.CLUSTER, "`cluster`, `all`, `off`",
            "where the server serves its cluster page, Monika, Drawgantt and the REST API: "
            "`cluster`: on the cluster network and localhost; `all`: every interface"),
    Setting("autoconf", _boolean, True, "`0` or `1`",
            "`0` turns the agent off (`oar-live-autoconf.service` is skipped)"),
)}  # fmt: skip


def _default(name: str) -> Any:
    return SETTINGS[name].default


def settings_table() -> str:
    """The `oar.*` keys as the markdown table of boot/cmdline.md (a test keeps them equal)."""
    rows = ["| key | values | default | meaning |", "|---|---|---|---|"]
    for setting in SETTINGS.values():
        default = "none" if setting.default in (None, "") else f"`{_describe(setting.default)}`"
        rows.append(f"| `oar.{setting.name}` | {setting.values} | {default} | {setting.help} |")
    return "\n".join(rows) + "\n"


@dataclass(frozen=True)
class Config:
    """The settings of SETTINGS (one field each, its default from the table) and their sources."""

    role: Role = _default("role")
    server: str | None = _default("server")
    keymap: str = _default("keymap")
    timeout: int = _default("timeout")
    nbmin: int = _default("nbmin")
    token: str = _default("token")
    pxe: bool = _default("pxe")
    net: str | None = _default("net")
    web: Web = _default("web")
    autoconf: bool = _default("autoconf")
    # where each value came from; not part of equality (two configs with the same settings are
    # the same configuration wherever the values came from)
    sources: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}),
                                       compare=False)

    def source(self, key: str) -> str:
        return self.sources.get(key, Source.DEFAULT.value)

    def answered(self, source: Source = Source.PROMPT, **values: Any) -> Config:
        """A copy with `values` set and their source recorded (prompt answers, auto role)."""
        sources = dict(self.sources)
        sources.update({key: source.value for key in values})
        return replace(self, **values, sources=MappingProxyType(sources))

    def server_endpoint(self) -> tuple[str, int] | None:
        """(host, port) of the registration service from `server`, or None when unknown."""
        if self.server is None:
            return None
        if _has_port(self.server):
            host, _, port = self.server.rpartition(":")
            return host.strip("[]"), int(port)
        return self.server.strip("[]"), REGISTRY_PORT

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "sources"}
        data["role"] = self.role.value
        data["web"] = self.web.value
        data["sources"] = {key: self.source(key) for key in SETTINGS}
        return data



def parse_value(key: str, text: str) -> Any:
    """The typed value of setting `key` from its text; ValueError says why it is refused."""
    return SETTINGS[key].parse(text.strip())


# ---- layers ------------------------------------------------------------------------------------


def _layer_from_cmdline(cmdline: str, warnings: list[str]) -> dict[str, str]:
    raw: dict[str, str] = {}
    for key, value in cmdline_params(cmdline).items():
        if not key.startswith("oar."):
            continue
        name = key[len("oar."):]
        if name not in SETTINGS:
            warnings.append(f"kernel command line: unknown key {key} ignored "
                            f"(known: {', '.join('oar.' + k for k in SETTINGS)})")
            continue
        if value is None:
            value = SETTINGS[name].bare_means
            if value is None:
                warnings.append(f"kernel command line: {key} needs a value ({key}=...); ignored")
                continue
        raw[name] = value
    return raw


def _layer_from_yaml(path: Path, label: str, warnings: list[str]) -> dict[str, str]:
    try:
        data = bounded.load_yaml(bounded.read_bytes(path, MAX_CONFIG_BYTES), MAX_CONFIG_BYTES)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        warnings.append(f"{label} {path}: cannot read it ({exc.strerror or exc}); ignored")
        return {}
    except bounded.InputError as exc:
        at = f" at line {exc.line}" if exc.line else ""
        warnings.append(f"{label} {path}: {exc.message}{at}; ignored")
        return {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        warnings.append(f"{label} {path}: expected `key: value` lines; ignored")
        return {}
    raw: dict[str, str] = {}
    for key, value in data.items():
        name = str(key).removeprefix("oar.")
        if name not in SETTINGS:
            warnings.append(f"{label} {path}: unknown key {key!s} ignored")
            continue
        if isinstance(value, bool):
            raw[name] = "1" if value else "0"
        elif isinstance(value, str | int) and not isinstance(value, bool):
            raw[name] = str(value)
        else:
            warnings.append(f"{label} {path}: {key}: expected a single value; ignored")
    return raw


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return "(none)" if value is None else str(value)


def load_config(root: Path, cmdline: str) -> tuple[Config, list[str]]:
    """The effective configuration before prompts, and the warnings for the console.

    `cmdline` is the kernel command line, read once by the caller (boot.cmdline.read_cmdline).
    """
    warnings: list[str] = []
    layers = [
        (Source.IMAGE, "image config", _layer_from_yaml(root / IMAGE_CONFIG, "image config",
                                                        warnings)),
        (Source.MEDIUM, "boot medium", _layer_from_yaml(root / MEDIUM_CONFIG, "boot medium",
                                                        warnings)),
        (Source.CMDLINE, "kernel command line",
         _layer_from_cmdline(cmdline, warnings)),
    ]
    config = Config()
    values: dict[str, Any] = {}
    sources = {name: Source.DEFAULT.value for name in SETTINGS}
    for source, label, raw in layers:
        for name, text in raw.items():
            try:
                values[name] = parse_value(name, text)
                sources[name] = source.value
            except ValueError as exc:
                kept = values.get(name, getattr(config, name))
                origin = sources[name]
                shown = f"oar.{name}" if source is Source.CMDLINE else name
                if name == "token":
                    text = "***"
                warnings.append(f"{label}: {shown}={text}: {exc}; using "
                                f"{'***' if name == 'token' else _describe(kept)} ({origin})")
    return replace(config, **values, sources=MappingProxyType(sources)), warnings


# ---- config.json: what later stages read --------------------------------------------------------


def write_config(config: Config, root: Path = Path("/")) -> Path:
    """Write root/run/oar-live/config.json (mode 0600: it holds the cluster token)."""
    path = root / CONFIG_JSON
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(config.to_json(), out, indent=2, sort_keys=True)
        out.write("\n")
    os.replace(tmp, path)
    return path


def config_from_json(data: Any) -> Config:
    """A Config from its JSON form; ValueError names the first bad field."""
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    values: dict[str, Any] = {}
    for name in SETTINGS:
        if data.get(name) in (None, ""):  # unset (an image built without a token)
            continue
        value = data[name]
        text = ("1" if value else "0") if isinstance(value, bool) else str(value)
        try:
            values[name] = parse_value(name, text)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    raw_sources = data.get("sources") or {}
    if not isinstance(raw_sources, dict):
        raise ValueError("sources: expected an object")
    sources = {str(k): str(v) for k, v in raw_sources.items() if k in SETTINGS}
    return Config(**values, sources=MappingProxyType(sources))


def read_config(root: Path = Path("/")) -> Config:
    """The configuration the boot decided (root/run/oar-live/config.json)."""
    path = root / CONFIG_JSON
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist: has `oar-autoconf boot` run?") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path} is unreadable: {exc}") from None
    try:
        return config_from_json(data)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None
