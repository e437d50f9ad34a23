"""The server's web step: where Apache listens (oar.web), what the page says, Apache started."""

from __future__ import annotations

import json
import subprocess

import pytest

from autoconf import oarconf, website
from autoconf.clusterpage import SITE
from autoconf.config import Config, Role, Web


@pytest.mark.parametrize("web, address, listens", [
    (Web.CLUSTER, "10.0.0.1", ["127.0.0.1:80", "10.0.0.1:80", "127.0.0.1:6668"]),
    (Web.CLUSTER, "127.0.0.1", ["127.0.0.1:80", "127.0.0.1:6668"]),  # no network: solo laptop
    (Web.ALL, "10.0.0.1", ["80", "127.0.0.1:6668"]),
])
def test_apache_listens_on_the_cluster_network_and_localhost_unless_asked(web, address, listens):
    lines = website.ports_conf(web, address).splitlines()
    assert [line.split()[1] for line in lines if line.startswith("Listen ")] == listens


class Systemd:
    """systemctl and dpkg-query as a booted server answers them; records what was asked."""

    def __init__(self, active: bool = False) -> None:
        self.active, self.calls = active, []

    def __call__(self, argv, check=True, timeout=None, **kwargs):
        self.calls.append(list(argv))
        if argv[:2] == ["dpkg-query", "-W"]:
            return subprocess.CompletedProcess(argv, 0, "2.6.1-1+deb13u1", "")
        if argv[:2] == ["systemctl", "is-active"]:
            return subprocess.CompletedProcess(argv, 0 if self.active else 3, "", "")
        if argv[:3] in (["systemctl", "--no-block", "start"],
                        ["systemctl", "--no-block", "reload-or-restart"]):
            self.active = True
            return subprocess.CompletedProcess(argv, 0, "", "")
        raise AssertionError(f"unexpected command {argv}")


@pytest.fixture
def root(tmp_path):
    (tmp_path / "usr/sbin").mkdir(parents=True)
    (tmp_path / website.APACHE).write_text("")
    (tmp_path / "run/systemd/system").mkdir(parents=True)
    (tmp_path / "etc/apache2").mkdir(parents=True)
    (tmp_path / "etc/os-release").write_text('PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\n')
    (tmp_path / oarconf.API_USERS).parent.mkdir(parents=True)
    (tmp_path / oarconf.API_USERS).write_text("user:$6$salt$hash\n")
    oarconf.new_secrets(tmp_path)
    return tmp_path


def test_the_server_starts_apache_with_this_boot_s_settings(root):
    run = Systemd()
    config = Config(role=Role.SERVER, nbmin=2)
    assert website.ensure_website(config, "oar-server", "10.0.0.1", root, run) is True
    assert ["systemctl", "--no-block", "start", "apache2"] in run.calls
    assert "Listen 10.0.0.1:80" in (root / website.PORTS_CONF).read_text()
    site = json.loads((root / SITE).read_text())
    assert site["server"] == {"hostname": "oar-server", "address": "10.0.0.1",
                              "url": "http://10.0.0.1/"}
    assert (site["nbmin"], site["job_user"], site["oar_version"]) == (2, "user", "2.6.1-1+deb13u1")
    assert site["distribution"] == "Debian GNU/Linux 13 (trixie)"
    password = oarconf.read_secrets(root).db_password_ro
    assert f'DB_BASE_PASSWD_RO="{password}"' in (root / oarconf.WEB_DB_CONF).read_text()


def test_a_second_run_changes_nothing_and_a_new_address_reloads(root):
    run = Systemd()
    config = Config(role=Role.SERVER)
    website.ensure_website(config, "oar-server", "10.0.0.1", root, run)
    run.calls.clear()
    assert website.ensure_website(config, "oar-server", "10.0.0.1", root, run) is False
    assert not [c for c in run.calls if c[1] == "--no-block"]
    assert website.ensure_website(config, "oar-server", "10.0.0.9", root, run) is True
    assert ["systemctl", "--no-block", "reload-or-restart", "apache2"] in run.calls


def test_oar_web_off_starts_nothing(root):
    run = Systemd()
    assert website.ensure_website(Config(web=Web.OFF), "oar-server", "10.0.0.1", root, run) is False
    assert run.calls == [] and not (root / SITE).exists()


def test_an_image_without_the_web_tools_is_told_apart(root, tmp_path_factory):
    assert website.installed(root) and not website.installed(tmp_path_factory.mktemp("bare"))
