"""Effective configuration: layers, kernel keys, warnings instead of failures, config.json."""

import json
import stat
from dataclasses import fields
from pathlib import Path

import pytest

from autoconf.config import (
    BEACON_PORT,
    MAX_CONFIG_BYTES,
    REGISTRY_PORT,
    SETTINGS,
    Config,
    ConfigError,
    Role,
    Source,
    cmdline_params,
    load_config,
    read_config,
    settings_table,
    write_config,
)
from boot.bounded import MAX_VALUES
from boot.cmdline import read_cmdline
from tests.boot.test_bounded import ALIAS_BOMB

DEBIAN_CMDLINE = "BOOT_IMAGE=/live/vmlinuz boot=live components quiet splash"


def write(root, rel, text):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_defaults_without_any_layer(tmp_path):
    config, warnings = load_config(tmp_path, cmdline=DEBIAN_CMDLINE)
    assert warnings == []
    assert config == Config()
    assert (config.role, config.keymap, config.timeout, config.nbmin) == (Role.ASK, "us", 10, 1)
    assert config.pxe is False and config.autoconf is True and config.server is None
    assert config.source("keymap") == "default"


def test_documented_ports():
    assert (REGISTRY_PORT, BEACON_PORT) == (6680, 6681)


def test_kernel_keys_are_parsed_and_typed(tmp_path):
    cmdline = (f"{DEBIAN_CMDLINE} oar.role=node oar.server=10.0.0.1:7000 oar.keymap=fr "
               "oar.timeout=0 oar.nbmin=3 oar.pxe=1 oar.net=10.0.0.0/24 oar.token=s3cret")
    config, warnings = load_config(tmp_path, cmdline=cmdline)
    assert warnings == []
    assert config.role is Role.NODE
    assert config.server_endpoint() == ("10.0.0.1", 7000)
    assert (config.keymap, config.timeout, config.nbmin, config.pxe) == ("fr", 0, 3, True)
    assert config.net == "10.0.0.0/24" and config.token == "s3cret"
    assert all(config.source(k) == "cmdline" for k in ("role", "server", "keymap", "token"))
    assert config.source("autoconf") == "default"


def test_the_kernel_line_of_root_proc_cmdline_gives_the_settings(tmp_path):
    write(tmp_path, "proc/cmdline", f"{DEBIAN_CMDLINE} oar.role=solo oar.autoconf=0\n")
    config, _ = load_config(tmp_path, read_cmdline(tmp_path))
    assert config.role is Role.SOLO and config.autoconf is False


def test_server_without_port_uses_the_registry_port(tmp_path):
    config, _ = load_config(tmp_path, cmdline="oar.server=192.168.1.10")
    assert config.server_endpoint() == ("192.168.1.10", REGISTRY_PORT)


def test_layers_override_in_order(tmp_path):
    write(tmp_path, "etc/oar-live/config.yaml", "token: from-image\nkeymap: de\ntimeout: 30\n")
    write(tmp_path, "run/live/medium/oar-live.yaml", "keymap: fr\nrole: server\npxe: yes\n")
    config, warnings = load_config(tmp_path, cmdline="oar.role=solo")
    assert warnings == []
    assert (config.token, config.source("token")) == ("from-image", "image")
    assert (config.timeout, config.source("timeout")) == (30, "image")
    assert (config.keymap, config.source("keymap")) == ("fr", "medium")
    assert (config.pxe, config.source("pxe")) == (True, "medium")
    assert (config.role, config.source("role")) == (Role.SOLO, "cmdline")


def test_prompt_answers_are_the_last_layer(tmp_path):
    config, _ = load_config(tmp_path, cmdline="oar.keymap=fr")
    answered = config.answered(keymap="de", role=Role.SERVER)
    assert (answered.keymap, answered.source("keymap")) == ("de", "prompt")
    assert answered.role is Role.SERVER and config.keymap == "fr"  # the original is untouched


@pytest.mark.parametrize(
    ("word", "key", "expected", "in_warning"),
    [
        ("oar.timeout=soon", "timeout", 10, "oar.timeout=soon"),
        ("oar.timeout=-1", "timeout", 10, "whole number"),
        ("oar.timeout=99999", "timeout", 10, "0 to 3600"),
        ("oar.role=master", "role", Role.ASK, "server, node, solo"),
        ("oar.pxe=maybe", "pxe", False, "not 0 or 1"),
        ("oar.server=10.0.0.1:99999", "server", None, "port"),
        ("oar.server=not_a_host!", "server", None, "IP address"),
        ("oar.net=10.0.0.0/33", "net", None, "CIDR"),
        ("oar.keymap=../../etc/passwd", "keymap", "us", "keymap"),
        ("oar.nbmin=two", "nbmin", 1, "oar.nbmin"),
    ],
)
def test_bad_values_warn_and_keep_the_default(tmp_path, word, key, expected, in_warning):
    config, warnings = load_config(tmp_path, cmdline=f"{DEBIAN_CMDLINE} {word}")
    assert getattr(config, key) == expected
    assert config.source(key) == "default"
    assert len(warnings) == 1 and in_warning in warnings[0]
    assert warnings[0].startswith("kernel command line:")


def test_bad_cmdline_value_keeps_the_lower_layer(tmp_path):
    write(tmp_path, "run/live/medium/oar-live.yaml", "timeout: 5\n")
    config, warnings = load_config(tmp_path, cmdline="oar.timeout=abc")
    assert (config.timeout, config.source("timeout")) == (5, "medium")
    assert warnings == ["kernel command line: oar.timeout=abc: not a whole number from 0 to 3600;"
                        " using 5 (medium)"]


def test_unknown_keys_and_bare_keys_warn(tmp_path):
    config, warnings = load_config(tmp_path, cmdline="oar.rol=server oar.server oar.pxe quiet")
    assert config.role is Role.ASK and config.server is None
    assert config.pxe is True  # a bare flag means 1
    assert any("unknown key oar.rol" in w for w in warnings)
    assert any("oar.server needs a value" in w for w in warnings)
    assert len(warnings) == 2


def test_a_bad_token_is_not_echoed(tmp_path):
    _, warnings = load_config(tmp_path, cmdline='oar.token="my secret"')
    assert len(warnings) == 1 and "secret" not in warnings[0]


def test_broken_medium_yaml_is_reported_and_ignored(tmp_path):
    write(tmp_path, "run/live/medium/oar-live.yaml", "role: [server\n")
    write(tmp_path, "etc/oar-live/config.yaml", "- a list\n")
    config, warnings = load_config(tmp_path, cmdline="")
    assert config == Config()
    assert any("boot medium" in w and "invalid YAML" in w and "line 2" in w for w in warnings)
    assert any("image config" in w and "key: value" in w for w in warnings)


@pytest.mark.parametrize("data,message", [
    (b"role: serv\xe9r\n", "not UTF-8 text (byte 0xe9) at line 1"),
    (b"keymap: fr\nrole: \x00\n", "not a text file (a NUL byte) at line 2"),
    (ALIAS_BOMB, f"its anchors and aliases expand to more than {MAX_VALUES} values at line 1"),
    (b"# comment\n" * 7000, f"larger than {MAX_CONFIG_BYTES} bytes"),
])
def test_unreadable_medium_yaml_is_one_warning_and_ignored(tmp_path, data, message):
    medium = tmp_path / "run/live/medium/oar-live.yaml"
    medium.parent.mkdir(parents=True)
    medium.write_bytes(data)
    config, warnings = load_config(tmp_path, cmdline="")
    assert config == Config()
    assert warnings == [f"boot medium {medium}: {message}; ignored"]


def test_yaml_keys_with_oar_prefix_and_unknown_keys(tmp_path):
    write(tmp_path, "run/live/medium/oar-live.yaml", "oar.role: node\ncolour: blue\nnet: [a]\n")
    config, warnings = load_config(tmp_path, cmdline="")
    assert config.role is Role.NODE
    assert any("unknown key colour" in w for w in warnings)
    assert any("net: expected a single value" in w for w in warnings)


def test_quoted_cmdline_values_and_init_arguments():
    params = cmdline_params('a=1 oar.token="x y" quiet -- oar.role=server')
    assert params == {"a": "1", "oar.token": "x y", "quiet": None}


def test_write_then_read_round_trips_and_is_private(tmp_path):
    config, _ = load_config(tmp_path, cmdline="oar.server=10.1.2.3 oar.token=t0k oar.keymap=fr")
    config = config.answered(role=Role.NODE)
    path = write_config(config, tmp_path)
    assert path == tmp_path / "run/oar-live/config.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["role"] == "node" and data["sources"]["role"] == "prompt"
    assert data["sources"]["token"] == "cmdline"
    again = read_config(tmp_path)
    assert again == config
    assert dict(again.sources) == dict(config.sources)
    assert again.source("keymap") == "cmdline"


def test_read_config_explains_a_missing_or_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="has `oar-autoconf boot` run"):
        read_config(tmp_path)
    write(tmp_path, "run/oar-live/config.json", '{"role": "captain"}')
    with pytest.raises(ConfigError, match="role"):
        read_config(tmp_path)


def test_source_names_are_the_documented_ones():
    assert {s.value for s in Source} >= {"default", "image", "medium", "cmdline", "prompt"}


def test_every_setting_is_one_row_of_the_table_with_its_config_field_and_default():
    names = [f.name for f in fields(Config) if f.name != "sources"]
    assert names == list(SETTINGS)
    assert all(getattr(Config(), name) == SETTINGS[name].default for name in SETTINGS)
    assert [n for n, s in SETTINGS.items() if s.bare_means] == ["pxe", "autoconf"]


def test_the_kernel_keys_table_of_boot_cmdline_md_is_the_settings_table():
    doc = (Path(__file__).resolve().parents[2] / "boot/cmdline.md").read_text().splitlines()
    start = doc.index("| key | values | default | meaning |")
    end = next(i for i in range(start, len(doc)) if not doc[i].startswith("|"))
    assert "\n".join(doc[start:end]) + "\n" == settings_table(), (
        "boot/cmdline.md's oar.* table differs from autoconf.config.SETTINGS; it should read:\n"
        + settings_table())
