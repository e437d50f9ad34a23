"""`oar-autoconf`: detect, config, and the subcommands handed to the server and node modules."""

import json
import shlex
import sys
import types

from autoconf import cli
from autoconf.config import load_config, write_config
from tests.autoconf import fakeroot
from tests.autoconf.fakeroot import build_root


def test_detect_prints_topology_and_the_commands_for_an_empty_db(tmp_path, capsys):
    root = build_root(tmp_path, fakeroot.two_sockets_two_cores())
    assert cli.main(["detect", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "hostname        node-525400123456" in out
    assert "4 online: 2 socket(s), 4 core(s)" in out
    commands = [shlex.split(line) for line in out.splitlines()
                if line.startswith("  oarnodesetting ")]
    got = [[a for a in argv if a.startswith(("cpu=", "core=", "cpuset="))] for argv in commands]
    assert got == [["cpu=1", "core=1", "cpuset=0"], ["cpu=1", "core=2", "cpuset=1"],
                   ["cpu=2", "core=3", "cpuset=2"], ["cpu=2", "core=4", "cpuset=3"]]
    assert commands[0][:4] == ["oarnodesetting", "-a", "-h", "node-525400123456"]


def test_detect_json(tmp_path, capsys):
    root = build_root(tmp_path, fakeroot.two_sockets_four_cores_ht())
    assert cli.main(["detect", "--root", str(root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["detection"]["cpus"]) == 16
    assert len(data["oarnodesetting"]) == 16
    assert data["oarnodesetting"][4][-4:] == ["-p", "cpuset=8", "-p", "mem=63"]


def test_detect_numbers_resources_as_the_images_oar_does(tmp_path, capsys):
    root = build_root(tmp_path, fakeroot.one_socket_four_cores_ht())
    (root / "etc/oar-live").mkdir(parents=True)
    (root / "etc/oar-live/oar-version").write_text("2.6\n")
    assert cli.main(["detect", "--root", str(root), "--json"]) == 0
    commands = json.loads(capsys.readouterr().out)["oarnodesetting"]
    assert [argv[argv.index("-p", 9) + 1] for argv in commands] == [
        "cpuset=0,4", "cpuset=1,5", "cpuset=2,6", "cpuset=3,7"]
    assert all(not a.startswith("thread=") for argv in commands for a in argv)
    assert cli.main(["detect", "--root", str(root), "--oar-version", "2.5"]) == 0
    out = capsys.readouterr().out
    assert "(a resource per logical CPU)" in out and out.count("  oarnodesetting ") == 8


def test_detect_with_an_unknown_image_oar_version_is_one_error_line(tmp_path, capsys):
    root = build_root(tmp_path, fakeroot.one_socket_one_core())
    (root / "etc/oar-live").mkdir(parents=True)
    (root / "etc/oar-live/oar-version").write_text("3.0\n")
    assert cli.main(["detect", "--root", str(root)]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        f"oar-autoconf: error: {root}/etc/oar-live/oar-version: unknown OAR version '3.0' "
        "(known: 2.5, 2.6)"]


def test_detect_on_an_empty_directory_is_one_error_line(tmp_path, capsys):
    assert cli.main(["detect", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("oar-autoconf: error: no online CPU") and "Traceback" not in err


def test_config_before_boot_shows_layers_and_hides_the_token(tmp_path, capsys):
    (tmp_path / "etc/oar-live").mkdir(parents=True)
    (tmp_path / "etc/oar-live/config.yaml").write_text("token: very-secret\n")
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cmdline").write_text("quiet oar.role=node oar.bogus=1\n")
    assert cli.main(["config", "--root", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "very-secret" not in captured.out
    assert "oar.token     ********" in captured.out and "(image)" in captured.out
    assert "oar.role      node" in captured.out and "(cmdline)" in captured.out
    assert "unknown key oar.bogus" in captured.err


def test_config_after_boot_reads_config_json(tmp_path, capsys):
    config, _ = load_config(tmp_path, cmdline="oar.role=solo oar.keymap=fr")
    write_config(config, tmp_path)
    assert cli.main(["config", "--root", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["role"] == "solo" and data["keymap"] == "fr"
    assert data["sources"]["keymap"] == "cmdline"


def test_delegated_subcommands_get_their_arguments(monkeypatch):
    seen = {}
    for name, function in (("autoconf.status", "main"), ("autoconf.registry", "main"),
                           ("autoconf.node", "watch_main"), ("autoconf.agent", "main")):
        module = types.ModuleType(name)
        setattr(module, function, lambda argv, n=name: seen.setdefault(n, argv) and 3 or 3)
        monkeypatch.setitem(sys.modules, name, module)
    assert cli.main(["status", "--json"]) == 3
    assert cli.main(["serve", "--port", "7000"]) == 3
    assert cli.main(["node-watch"]) == 3
    assert cli.main(["boot", "--debug"]) == 3
    assert seen == {"autoconf.status": ["--json"], "autoconf.registry": ["--port", "7000"],
                    "autoconf.node": [], "autoconf.agent": ["--debug"]}


def test_a_missing_role_module_is_an_error_not_a_traceback(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "autoconf.registry", None)  # import fails
    assert cli.main(["serve"]) == 1
    assert "has no autoconf.registry.main" in capsys.readouterr().err
