"""oar.conf rendering from Debian's file, and the database passwords stored in the image."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from autoconf import oarconf
from autoconf.oarconf import OarConfError, OarSettings, Secrets

DEBIAN_OAR_CONF = Path("/usr/share/oar/oar-common/oar.conf")

# The head of Debian's oar.conf (oar-common 2.5.9), as shipped.
TEMPLATE = """\
#############################################################################
#
#   OAR configuration file
#
#############################################################################

# Database type ("mysql" or "Pg")
DB_TYPE="Pg"

# DataBase hostname
DB_HOSTNAME="127.0.0.1"

# DataBase port
DB_PORT="5432"

# Database base name
DB_BASE_NAME="oar"

# DataBase user name
DB_BASE_LOGIN="oar"

# DataBase user password
DB_BASE_PASSWD=""

# DataBase read only user name
DB_BASE_LOGIN_RO="oar_ro"

# DataBase read only user password
DB_BASE_PASSWD_RO=""

# Name of the server
SERVER_HOSTNAME="localhost"

# Server port
SERVER_PORT="6666"

# Cpusets
JOB_RESOURCE_MANAGER_PROPERTY_DB_FIELD="cpuset"
#CPUSET_PATH="/oar"
OPENSSH_CMD="/usr/bin/ssh -p 6667 -e none"
"""

SECRETS = Secrets("a" * 48, "b" * 48)


def fake_root(tmp_path: Path, template: str = TEMPLATE) -> Path:
    path = tmp_path / oarconf.TEMPLATE
    path.parent.mkdir(parents=True)
    path.write_text(template)
    return tmp_path


def test_render_sets_our_keys_in_place_and_keeps_everything_else(tmp_path):
    root = fake_root(tmp_path)
    text = oarconf.render_for(OarSettings("oar-server", "10.0.0.1", SECRETS), root)
    values = oarconf.parse(text)
    assert values["DB_HOSTNAME"] == "10.0.0.1"
    assert values["SERVER_HOSTNAME"] == "oar-server"
    assert values["DB_BASE_PASSWD"] == "a" * 48 and values["DB_BASE_PASSWD_RO"] == "b" * 48
    assert values["SERVER_PORT"] == "6666" and values["DB_PORT"] == "5432"
    # Same number of lines, each key still under its own comment, the rest untouched.
    assert len(text.splitlines()) == len(TEMPLATE.splitlines())
    lines = text.splitlines()
    assert lines[lines.index('SERVER_HOSTNAME="oar-server"') - 1] == "# Name of the server"
    assert '#CPUSET_PATH="/oar"' in lines
    assert 'OPENSSH_CMD="/usr/bin/ssh -p 6667 -e none"' in lines


RENDER_ELSEWHERE = """\
import sys
from pathlib import Path
from autoconf import oarconf
secrets = oarconf.Secrets(sys.argv[2], sys.argv[3])
settings = oarconf.OarSettings("oar-server", "10.0.0.1", secrets)
sys.stdout.write(oarconf.render_for(settings, Path(sys.argv[1])))
"""


@pytest.mark.spawns  # a second interpreter stands for the other machine
def test_render_is_the_same_text_whatever_machine_renders_it(tmp_path):
    server = fake_root(tmp_path / "server")
    node = fake_root(tmp_path / "node")
    for root, name in ((server, "oar-server"), (node, "node-1")):
        (root / "etc").mkdir(exist_ok=True)
        (root / "etc/hostname").write_text(name + "\n")
    settings = OarSettings("oar-server", "10.0.0.1", SECRETS)
    on_server = oarconf.render_for(settings, server)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]), PYTHONHASHSEED="12345",
               HOSTNAME="node-1", LANG="C", TZ="Pacific/Chatham")
    on_node = subprocess.run(
        [sys.executable, "-c", RENDER_ELSEWHERE, str(node), SECRETS.db_password,
         SECRETS.db_password_ro], env=env, cwd=node, check=True, capture_output=True, text=True,
    ).stdout
    assert on_node == on_server
    assert oarconf.render(on_server, settings.values()) == on_server, (
        "rendering an already rendered file changes nothing"
    )


def test_missing_keys_are_appended_and_duplicates_dropped():
    text = oarconf.render('A="1"\nSERVER_PORT="1"\nSERVER_PORT="2"\n', {"SERVER_PORT": "6666",
                                                                          "DB_PORT": "5432"})
    assert text == 'A="1"\nSERVER_PORT="6666"\nDB_PORT="5432"\n'


@pytest.mark.parametrize("value", ['x"; rm -rf /; "', "$(id)", "`id`", "a\nb", "a\\b"])
def test_values_that_bash_would_interpret_are_refused(value):
    with pytest.raises(OarConfError, match="unsafe value"):
        oarconf.render('SERVER_HOSTNAME="x"\n', {"SERVER_HOSTNAME": value})


def test_missing_template_names_the_package(tmp_path):
    with pytest.raises(OarConfError, match="oar-common"):
        oarconf.render_for(OarSettings("s", "10.0.0.1", SECRETS), tmp_path)


def test_secrets_are_generated_once_and_kept_private(tmp_path):
    first, generated = oarconf.ensure_secrets(tmp_path)
    assert generated is True
    path = tmp_path / oarconf.SECRETS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first.db_password) == 48 and first.db_password != first.db_password_ro
    again, generated_again = oarconf.ensure_secrets(tmp_path)
    assert (again, generated_again) == (first, False)
    assert oarconf.read_secrets(tmp_path) == first


def test_two_builds_get_different_passwords(tmp_path):
    one, _ = oarconf.ensure_secrets(tmp_path / "a")
    two, _ = oarconf.ensure_secrets(tmp_path / "b")
    assert one.db_password != two.db_password


@pytest.mark.parametrize("content", ["db_password: short\ndb_password_ro: short\n", "- a\n",
                                     "db_password: " + "a" * 48 + "\n"])
def test_broken_secrets_file_is_an_error_not_a_silent_default(tmp_path, content):
    path = tmp_path / oarconf.SECRETS_FILE
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(OarConfError, match="secrets.yaml"):
        oarconf.ensure_secrets(tmp_path)


def test_write_reports_changes_and_keeps_the_file_private(tmp_path):
    assert oarconf.write_oar_conf('A="1"\n', tmp_path) is True
    path = tmp_path / oarconf.OAR_CONF
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert oarconf.write_oar_conf('A="1"\n', tmp_path) is False
    assert oarconf.write_oar_conf('A="2"\n', tmp_path) is True and path.read_text() == 'A="2"\n'


def test_an_existing_oar_conf_gets_debians_mode(tmp_path):
    path = tmp_path / oarconf.OAR_CONF
    path.parent.mkdir(parents=True)
    path.write_text('A="1"\n')
    path.chmod(0o640)
    assert oarconf.write_oar_conf('A="1"\n', tmp_path) is True
    assert stat.S_IMODE(path.stat().st_mode) == oarconf.OAR_CONF_MODE == 0o600
    assert oarconf.write_oar_conf('A="1"\n', tmp_path) is False


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_oar_conf_belongs_to_the_oar_user_of_the_tree(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\noar:x:4242:4242::/:/bin/sh\n")
    assert oarconf.write_oar_conf('A="1"\n', tmp_path) is True
    info = (tmp_path / oarconf.OAR_CONF).stat()
    assert (info.st_uid, info.st_gid) == (4242, 0)
    assert oarconf.write_oar_conf('A="1"\n', tmp_path) is False


def test_new_secrets_replace_the_token_and_passwords_and_keep_the_rest(tmp_path, capsys):
    root = fake_root(tmp_path)
    image_config = root / "etc/oar-live/config.yaml"
    assert oarconf.main(["--root", str(root), "--new-secrets"]) == 0
    first_token = image_config.read_text()
    first = oarconf.read_secrets(root)
    image_config.write_text(first_token + "keymap: fr\n")
    assert oarconf.main(["--root", str(root), "--new-secrets"]) == 0
    lines = image_config.read_text().splitlines()
    assert "keymap: fr" in lines and len([x for x in lines if x.startswith("token:")]) == 1
    assert f"{lines[-1]}\n" != first_token and len(lines[-1]) == len("token: ") + 48
    second = oarconf.read_secrets(root)
    assert second.db_password != first.db_password
    values = oarconf.parse((root / oarconf.OAR_CONF).read_text())
    assert (values["DB_BASE_PASSWD"], values["DB_BASE_PASSWD_RO"]) == (
        second.db_password, second.db_password_ro)
    for path in (image_config, root / oarconf.SECRETS_FILE, root / oarconf.OAR_CONF):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert "cluster token: generated; database passwords: generated" in capsys.readouterr().out


def test_build_time_command_writes_secrets_and_conf(tmp_path, capsys):
    root = fake_root(tmp_path)
    assert oarconf.main(["--root", str(root)]) == 0
    values = oarconf.parse((root / oarconf.OAR_CONF).read_text())
    stored = oarconf.read_secrets(root)
    assert values["DB_BASE_PASSWD"] == stored.db_password
    assert values["DB_HOSTNAME"] == "localhost" and values["SERVER_HOSTNAME"] == "localhost"
    assert "generated" in capsys.readouterr().out
    assert oarconf.main(["--root", str(root)]) == 0
    assert "passwords: unchanged; oar.conf: unchanged" in capsys.readouterr().out


@pytest.mark.skipif(not DEBIAN_OAR_CONF.exists(), reason="oar-common is not installed")
def test_debians_real_file_only_changes_in_our_keys():
    original = DEBIAN_OAR_CONF.read_text()
    settings = OarSettings("oar-server", "10.0.0.1", SECRETS)
    rendered = oarconf.render(original, settings.values())
    before, after = original.splitlines(), rendered.splitlines()
    assert len(before) == len(after)
    changed = {b.split("=")[0] for b, a in zip(before, after, strict=True) if b != a}
    assert changed <= set(settings.values())
    assert {"DB_HOSTNAME", "DB_BASE_PASSWD", "DB_BASE_PASSWD_RO", "SERVER_HOSTNAME"} <= changed


MONIKA = """\
hostname = 127.0.0.1
dbport = 5432
dbtype = psql
dbname = oar
username = oar_ro
password = oar_ro
"""
DRAWGANTT = """<?php
$CONF['db_user']="oar_ro";
$CONF['db_passwd']="oar_ro";
$CONF['db_max_job_rows']=20000;
"""


def web_root(tmp_path):
    for path, text in ((oarconf.MONIKA_CONF, MONIKA), (oarconf.DRAWGANTT_CONF, DRAWGANTT)):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
        (tmp_path / path).chmod(0o600)
    return tmp_path


def test_the_web_tools_get_the_read_only_password_and_keep_the_rest(tmp_path):
    root = web_root(tmp_path)
    assert oarconf.write_web_db_settings(SECRETS, root) is True
    monika = (root / oarconf.MONIKA_CONF).read_text()
    assert f"password = {SECRETS.db_password_ro}\n" in monika and "username = oar_ro" in monika
    drawgantt = (root / oarconf.DRAWGANTT_CONF).read_text()
    assert f"$CONF['db_passwd']=\"{SECRETS.db_password_ro}\";" in drawgantt
    assert "$CONF['db_max_job_rows']=20000;" in drawgantt
    assert (root / oarconf.MONIKA_CONF).stat().st_mode & 0o777 == 0o600  # as the package has it
    page = oarconf.parse((root / oarconf.WEB_DB_CONF).read_text())
    assert page == {"DB_HOSTNAME": "127.0.0.1", "DB_PORT": "5432", "DB_BASE_NAME": "oar",
                    "DB_BASE_LOGIN_RO": "oar_ro", "DB_BASE_PASSWD_RO": SECRETS.db_password_ro}
    assert (root / oarconf.WEB_DB_CONF).stat().st_mode & 0o777 == oarconf.WEB_MODE
    assert oarconf.write_web_db_settings(SECRETS, root) is False


def test_a_web_tool_file_without_its_password_line_is_refused(tmp_path):
    root = web_root(tmp_path)
    (root / oarconf.MONIKA_CONF).write_text("username = oar_ro\n")
    with pytest.raises(OarConfError, match="expected one database password line, found 0"):
        oarconf.write_web_db_settings(SECRETS, root)


def test_new_secrets_reach_the_web_tools(tmp_path):
    root = web_root(tmp_path)
    (root / oarconf.TEMPLATE).parent.mkdir(parents=True)
    (root / oarconf.TEMPLATE).write_text('DB_HOSTNAME="localhost"\n')
    assert oarconf.main(["--root", str(root), "--new-secrets"]) == 0
    password = oarconf.read_secrets(root).db_password_ro
    assert f"password = {password}" in (root / oarconf.MONIKA_CONF).read_text()


@pytest.mark.spawns  # openssl hashes the password, as at build time
def test_the_api_htpasswd_holds_the_job_account_with_a_sha512_crypt_hash(tmp_path):
    credentials = tmp_path / "credentials"
    credentials.write_text("user: alice\npassword: 0123456789abcdef\n")
    assert oarconf.main(["--root", str(tmp_path), "--api-credentials", str(credentials)]) == 0
    line = (tmp_path / oarconf.API_USERS).read_text()
    user, hashed = line.strip().split(":", 1)
    salt = hashed.split("$")[2]
    again = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"],
                           input="0123456789abcdef\n", capture_output=True, text=True, check=True)
    assert user == "alice" and hashed == again.stdout.strip()
    assert (tmp_path / oarconf.API_USERS).stat().st_mode & 0o777 == 0o640
    assert "0123456789abcdef" not in line
    first = line
    assert oarconf.main(["--root", str(tmp_path), "--api-credentials", str(credentials)]) == 0
    assert (tmp_path / oarconf.API_USERS).read_text() != first, "a random salt each time"
    given = ["--api-credentials", str(credentials), "--secrets", str(credentials)]
    assert oarconf.main(["--root", str(tmp_path), *given]) == 0
    reproducible = (tmp_path / oarconf.API_USERS).read_text()
    assert oarconf.main(["--root", str(tmp_path), *given]) == 0
    assert (tmp_path / oarconf.API_USERS).read_text() == reproducible, "same inputs, same bytes"


@pytest.mark.parametrize("text", ["password: x\n", "user: alice\n", "user: Bad Name\npassword: x\n",
                                  "user: alice\npassword: " + "x" * 5000 + "\n"])
def test_a_credentials_file_that_is_not_one_is_refused(tmp_path, text):
    credentials = tmp_path / "credentials"
    credentials.write_text(text)
    with pytest.raises(OarConfError):
        oarconf.read_credentials_file(credentials)


def _secrets_file(tmp_path, **override):
    values = {"token": "ab" * 24, "db_password": "cd" * 24, "db_password_ro": "ef" * 24,
              "job_user_password": "not-read-here", **override}
    path = tmp_path / "build-secrets.yaml"
    path.write_text("".join(f"{key}: {value}\n" for key, value in values.items()))
    return path


def test_a_given_secrets_file_gives_the_same_secrets_to_every_build(tmp_path, capsys):
    given = _secrets_file(tmp_path)
    roots = [fake_root(tmp_path / name) for name in ("first", "second")]
    for root in roots:
        assert oarconf.main(["--root", str(root), "--new-secrets", "--secrets", str(given)]) == 0
    files = [oarconf.SECRETS_FILE, oarconf.OAR_CONF, Path("etc/oar-live/config.yaml")]
    for path in files:
        assert (roots[0] / path).read_bytes() == (roots[1] / path).read_bytes(), path
    assert oarconf.read_secrets(roots[0]) == oarconf.Secrets("cd" * 24, "ef" * 24)
    assert f"token: {'ab' * 24}" in (roots[0] / "etc/oar-live/config.yaml").read_text()
    assert f"cluster token: from {given}" in capsys.readouterr().out


@pytest.mark.parametrize("override, message", [
    ({"token": "short"}, "token must be 32 to 128 lowercase hex digits"),
    ({"db_password_ro": ""}, "db_password_ro must be"),
])
def test_a_secrets_file_with_a_bad_value_stops_the_build_naming_the_key(tmp_path, capsys,
                                                                       override, message):
    given = _secrets_file(tmp_path, **override)
    root = fake_root(tmp_path / "root")
    assert oarconf.main(["--root", str(root), "--new-secrets", "--secrets", str(given)]) == 1
    assert message in capsys.readouterr().err


def test_an_oversized_secrets_file_is_refused_before_parsing(tmp_path):
    given = tmp_path / "huge.yaml"
    given.write_text("x: " + "a" * oarconf.MAX_SECRETS_FILE_BYTES + "\n")
    with pytest.raises(oarconf.OarConfError, match="larger than"):
        oarconf.given_secrets(given)
