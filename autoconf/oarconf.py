"""The one writer of /etc/oar/oar.conf and of the build's secrets (token, database passwords).

oar.conf is Debian's shipped file (/usr/share/oar/oar-common/oar.conf) with the keys OAR Live
needs edited in place (database, server name and port); every other line stays as Debian ships
it. It is the same file on every machine: the server renders it at boot and hands the same text
to every node at registration. It is mode 0600, owner oar, as Debian installs it.

The image build runs `python3 -m autoconf.oarconf --root DIR --new-secrets` (the recipe's
oar_secrets.yaml, in oar_init and again in personalize, so that every build has its own), which
draws the cluster token (`token:` in /etc/oar-live/config.yaml, the agent's image layer) and the
two database passwords, kept in /etc/oar-live/secrets.yaml:

    db_password: <48 hex digits>
    db_password_ro: <48 hex digits>

then writes oar.conf with them; `--secrets FILE` takes the three from a build secrets file
instead (`build-iso --set secrets=FILE`, for reproducible builds: YAML with `token`,
`db_password`, `db_password_ro`, each 32 to 128 lowercase hex digits; other keys are for the
recipe). Both files are mode 0600, root only. When secrets.yaml is
missing at boot the server generates it, so a database created at boot uses fresh passwords.

OAR's web tools read the database as oar_ro with the same password: it is written into
Monika's /etc/oar/monika.conf and Drawgantt's /etc/oar/drawgantt-config.inc.php (each kept as
its package installs it: 0600, owner www-data) and into /etc/oar-live/web-db.conf (oar.conf
syntax, 0640 root:www-data), which the cluster page's data (autoconf.clusterpage) reads.
`--api-credentials FILE` (the build's `user:` / `password:` file) writes /etc/oar/api-users,
the REST API's htpasswd (SHA-512 crypt by `openssl passwd -6`, 0640 root:www-data).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import secrets
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autoconf.config import IMAGE_CONFIG
from boot import bounded, proc
from boot.files import write_if_changed

__all__ = [
    "API_USERS",
    "WEB_DB_CONF",
    "OAR_CONF",
    "OarConfError",
    "OarSettings",
    "Secrets",
    "SECRETS_FILE",
    "TEMPLATE",
    "OAR_CONF_MODE",
    "ensure_secrets",
    "given_secrets",
    "new_secrets",
    "new_token",
    "parse",
    "read_secrets",
    "render",
    "render_for",
    "write_api_users",
    "write_oar_conf",
    "write_web_db_settings",
]

TEMPLATE = Path("usr/share/oar/oar-common/oar.conf")
OAR_CONF = Path("etc/oar/oar.conf")
SECRETS_FILE = Path("etc/oar-live/secrets.yaml")
OAR_CONF_MODE = 0o600  # owner oar, group root: what Debian's oar-common installs
SECRET_MODE = 0o600  # secrets.yaml and the image's config.yaml (the token): root only
DB_PORT = 5432
SERVER_PORT = 6666
MONIKA_CONF = Path("etc/oar/monika.conf")  # oar-web-status: Monika's database settings
DRAWGANTT_CONF = Path("etc/oar/drawgantt-config.inc.php")  # ... and Drawgantt's
WEB_DB_CONF = Path("etc/oar-live/web-db.conf")  # the cluster page's (oar.conf syntax)
API_USERS = Path("etc/oar/api-users")  # the REST API's htpasswd (the package's example path)
WEB_MODE = 0o640  # web-db.conf, api-users: root, group www-data (Apache reads them)
WEB_GROUP = "www-data"
MAX_CREDENTIALS_BYTES = 4096
_JOB_USER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")

_LINE = re.compile(r'^(?P<key>[A-Z][A-Z0-9_]*)="(?P<value>[^"]*)"\s*$')
# What may sit between double quotes in a bash file without being interpreted.
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:/@+=, -]*$")
_PASSWORD = re.compile(r"^[0-9a-f]{32,128}$")
MAX_SECRETS_FILE_BYTES = 64 * 1024  # a given build secrets file: a few keys, an ssh key


class OarConfError(Exception):
    """oar.conf or the secrets file cannot be read, rendered or written."""


@dataclass(frozen=True)
class Secrets:
    """The passwords of the OAR database users `oar` (read-write) and `oar_ro` (read-only)."""

    db_password: str
    db_password_ro: str

    @classmethod
    def generate(cls) -> Secrets:
        return cls(secrets.token_hex(24), secrets.token_hex(24))


@dataclass(frozen=True)
class OarSettings:
    """The machine-independent values OAR Live puts into oar.conf."""

    server_hostname: str
    db_hostname: str
    secrets: Secrets
    db_port: int = DB_PORT
    server_port: int = SERVER_PORT

    def values(self) -> dict[str, str]:
        return {
            "DB_TYPE": "Pg",
            "DB_HOSTNAME": self.db_hostname,
            "DB_PORT": str(self.db_port),
            "DB_BASE_NAME": "oar",
            "DB_BASE_LOGIN": "oar",
            "DB_BASE_PASSWD": self.secrets.db_password,
            "DB_BASE_LOGIN_RO": "oar_ro",
            "DB_BASE_PASSWD_RO": self.secrets.db_password_ro,
            "SERVER_HOSTNAME": self.server_hostname,
            "SERVER_PORT": str(self.server_port),
        }


def parse(text: str) -> dict[str, str]:
    """The simple `KEY="value"` assignments of an oar.conf text (last one wins, like bash)."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if match:
            found[match["key"]] = match["value"]
    return found


def render(template: str, values: Mapping[str, str]) -> str:
    """`template` with the `KEY="..."` lines of `values` replaced in place, missing ones added."""
    for key, value in values.items():
        if not _SAFE_VALUE.match(value):
            raise OarConfError(f"oar.conf: refusing unsafe value for {key}: {value!r}")
    pending = dict(values)
    lines = []
    for line in template.splitlines():
        match = _LINE.match(line)
        if match and match["key"] in values:
            key = match["key"]
            if key not in pending:  # a second assignment of a key we set: drop it
                continue
            line = f'{key}="{pending.pop(key)}"'
        lines.append(line)
    lines.extend(f'{key}="{value}"' for key, value in pending.items())
    return "\n".join(lines) + "\n"


def render_for(settings: OarSettings, root: Path = Path("/")) -> str:
    """The oar.conf text for `settings`, from Debian's shipped oar.conf under `root`."""
    template = root / TEMPLATE
    try:
        text = template.read_text()
    except OSError as exc:
        raise OarConfError(
            f"cannot read Debian's oar.conf template {template}: {exc.strerror} "
            "(is oar-common installed?)"
        ) from None
    return render(text, settings.values())


def read_secrets(root: Path = Path("/")) -> Secrets | None:
    """The database passwords stored in the image, or None when there are none yet."""
    path = root / SECRETS_FILE
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, yaml.YAMLError) as exc:
        raise OarConfError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise OarConfError(f"{path}: expected a mapping with db_password and db_password_ro")
    found = {key: str(data.get(key) or "") for key in ("db_password", "db_password_ro")}
    for key, value in found.items():
        if not _PASSWORD.match(value):
            raise OarConfError(f"{path}: {key} must be 32 to 128 lowercase hex digits")
    return Secrets(**found)


def ensure_secrets(root: Path = Path("/")) -> tuple[Secrets, bool]:
    """The stored database passwords, generated and stored first if missing; (secrets, changed)."""
    existing = read_secrets(root)
    if existing is not None:
        return existing, False
    return new_secrets(root), True


def given_secrets(path: Path) -> tuple[str, Secrets]:
    """The cluster token and database passwords of a build secrets file (--secrets FILE)."""
    try:
        with open(path, "rb") as stream:
            raw = stream.read(MAX_SECRETS_FILE_BYTES + 1)
        if len(raw) > MAX_SECRETS_FILE_BYTES:
            raise OarConfError(f"{path}: larger than {MAX_SECRETS_FILE_BYTES} bytes")
        data = yaml.safe_load(raw.decode())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise OarConfError(f"cannot read the secrets file {path}: {exc}") from None
    if not isinstance(data, dict):
        raise OarConfError(f"{path}: expected a mapping with token, db_password, db_password_ro")
    found = {key: str(data.get(key) or "") for key in ("token", "db_password", "db_password_ro")}
    for key, value in found.items():
        if not _PASSWORD.match(value):
            raise OarConfError(f"{path}: {key} must be 32 to 128 lowercase hex digits")
    return found["token"], Secrets(found["db_password"], found["db_password_ro"])


def new_secrets(root: Path = Path("/"), given: Secrets | None = None) -> Secrets:
    """Store new database passwords under `root` (replacing any stored ones): drawn now, or
    `given` ones."""
    generated = given or Secrets.generate()
    text = (
        "# OAR database passwords, generated when this image was built. Keep private.\n"
        f"db_password: {generated.db_password}\n"
        f"db_password_ro: {generated.db_password_ro}\n"
    )
    _write_private(root / SECRETS_FILE, text)
    return generated


def new_token(root: Path = Path("/"), given: str | None = None) -> None:
    """Draw a new cluster token (or store `given`) into the image's config.yaml, keeping its
    other lines."""
    path = root / IMAGE_CONFIG
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        lines = []
    except OSError as exc:
        raise OarConfError(f"cannot read {path}: {exc.strerror}") from None
    kept = [line for line in lines if not line.startswith("token:")]
    token = given or secrets.token_hex(24)
    _write_private(path, "\n".join([*kept, f"token: {token}"]) + "\n")


def _write_private(path: Path, text: str) -> None:
    write_if_changed(path, text, SECRET_MODE)
    os.chmod(path, SECRET_MODE)


def write_oar_conf(text: str, root: Path = Path("/")) -> bool:
    """Install `text` as root/etc/oar/oar.conf, mode 0600, owner oar; changed?"""
    path = root / OAR_CONF
    changed = write_if_changed(path, text, OAR_CONF_MODE)
    info = path.stat()
    if info.st_mode & 0o7777 != OAR_CONF_MODE:
        os.chmod(path, OAR_CONF_MODE)
        changed = True
    try:
        changed |= _chown_to_oar(path, root, info.st_uid)
    except OSError as exc:
        raise OarConfError(f"cannot give {path} to user oar: {exc.strerror}") from None
    return changed


def _chown_to_oar(path: Path, root: Path, owner: int) -> bool:
    """Give `path` to the oar user of the system under `root`, as Debian's package does."""
    passwd = root / "etc/passwd"
    if os.geteuid() != 0 or not passwd.exists():
        return False  # not root, or a bare tree without users (tests): leave the owner as it is
    for line in passwd.read_text().splitlines():
        fields = line.split(":")
        if len(fields) > 3 and fields[0] == "oar":
            if int(fields[2]) == owner and path.stat().st_gid == 0:
                return False
            os.chown(path, int(fields[2]), 0)
            return True
    return False


def write_web_db_settings(found: Secrets, root: Path = Path("/")) -> bool:
    """The read-only database password in Monika's, Drawgantt's and the cluster page's
    settings (the first two only when oar-web-status is installed); changed?"""
    changed = False
    edits = (
        (MONIKA_CONF, re.compile(r"^password = .*$", re.M), f"password = {found.db_password_ro}"),
        (DRAWGANTT_CONF, re.compile(r"^\$CONF\['db_passwd'\]=\"[^\"]*\";", re.M),
         f"$CONF['db_passwd']=\"{found.db_password_ro}\";"),
    )
    for relative, line, replacement in edits:
        path = root / relative
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise OarConfError(f"cannot read {path}: {exc.strerror}") from None
        edited, count = line.subn(replacement, text)
        if count != 1:
            raise OarConfError(f"{path}: expected one database password line, found {count}")
        changed |= write_if_changed(path, edited)
    values = {"DB_HOSTNAME": "127.0.0.1", "DB_PORT": str(DB_PORT), "DB_BASE_NAME": "oar",
              "DB_BASE_LOGIN_RO": "oar_ro", "DB_BASE_PASSWD_RO": found.db_password_ro}
    text = "# The OAR database as read by the cluster page (oar-autoconf). Keep private.\n" + (
        "".join(f'{key}="{value}"\n' for key, value in values.items()))
    return _write_for_web(root / WEB_DB_CONF, text, root) or changed


def read_credentials_file(path: Path) -> tuple[str, str]:
    """(user, password) from a build's credentials file (`user: ...`, `password: ...`)."""
    try:
        text = bounded.text(bounded.read_bytes(path, MAX_CREDENTIALS_BYTES), MAX_CREDENTIALS_BYTES)
    except (OSError, ValueError) as exc:
        raise OarConfError(f"cannot read {path}: {exc}") from None
    values = dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)
    user, password = values.get("user", ""), values.get("password", "")
    if not _JOB_USER.match(user) or not password or "\n" in password:
        raise OarConfError(f"{path}: expected a `user:` (a login name) and a `password:` line")
    return user, password


def reproducible_salt(user: str, password: str) -> str:
    """The crypt salt of a build from a secrets file: from the account and its password, as
    personalize salts the shadow line, so the same inputs give the same bytes."""
    return hashlib.sha256(f"{user}:{password}".encode()).hexdigest()[:16]


def write_api_users(user: str, password: str, root: Path = Path("/"),
                    run: Callable[..., Any] = proc.run, salt: str | None = None) -> bool:
    """The REST API's htpasswd: `user` with `password` (SHA-512 crypt, a random salt unless
    `salt` is given); changed?"""
    argv = ["openssl", "passwd", "-6", *(["-salt", salt] if salt else []), "-stdin"]
    try:
        hashed = run(argv, input=password + "\n", timeout=30).stdout.strip()
    except proc.CommandError as exc:
        raise OarConfError(f"cannot hash the API password: {exc}") from None
    if not hashed.startswith("$6$"):
        raise OarConfError(f"openssl passwd -6 gave no SHA-512 crypt hash: {hashed[:20]!r}")
    return _write_for_web(root / API_USERS, f"{user}:{hashed}\n", root)


def _write_for_web(path: Path, text: str, root: Path) -> bool:
    """`text` in `path`, mode 0640, group www-data of the system under `root` (when root)."""
    changed = write_if_changed(path, text, WEB_MODE)
    if path.stat().st_mode & 0o7777 != WEB_MODE:
        os.chmod(path, WEB_MODE)
        changed = True
    gid = _group_id(root, WEB_GROUP)
    if gid is not None and os.geteuid() == 0 and path.stat().st_gid != gid:
        os.chown(path, 0, gid)
        changed = True
    return changed


def _group_id(root: Path, name: str) -> int | None:
    try:
        lines = (root / "etc/group").read_text().splitlines()
    except FileNotFoundError:
        return None
    for line in lines:
        fields = line.split(":")
        if len(fields) > 2 and fields[0] == name:
            return int(fields[2])
    return None


def main(argv: list[str] | None = None) -> int:
    """Build time: the secrets (new ones with --new-secrets) and oar.conf under --root."""
    parser = argparse.ArgumentParser(
        prog="python3 -m autoconf.oarconf",
        description="Write oar.conf with the database passwords (generated when missing).",
    )
    parser.add_argument("--root", type=Path, default=Path("/"))
    parser.add_argument("--new-secrets", action="store_true",
                        help="draw a new cluster token and new database passwords first")
    parser.add_argument("--secrets", type=Path, metavar="FILE",
                        help="with --new-secrets: take them from this build secrets file; "
                             "with --api-credentials: salt the hash reproducibly")
    parser.add_argument("--server-hostname", default="localhost")
    parser.add_argument("--db-host", default="localhost")
    parser.add_argument("--api-credentials", type=Path, metavar="FILE",
                        help="only write the REST API's htpasswd for the `user:` and "
                             "`password:` of FILE (the build's credentials)")
    args = parser.parse_args(argv)
    try:
        if args.api_credentials is not None:
            user, password = read_credentials_file(args.api_credentials)
            salt = reproducible_salt(user, password) if args.secrets else None
            changed = write_api_users(user, password, args.root, salt=salt)
            print(f"REST API account {user}: {'changed' if changed else 'unchanged'}")
            return 0
        if args.new_secrets:
            token, given = given_secrets(args.secrets) if args.secrets else (None, None)
            new_token(args.root, token)
            found, generated = new_secrets(args.root, given), True
        else:
            found, generated = ensure_secrets(args.root)
        text = render_for(OarSettings(args.server_hostname, args.db_host, found), args.root)
        changed = write_oar_conf(text, args.root)
        changed |= write_web_db_settings(found, args.root)
    except OarConfError as exc:
        print(f"oar-autoconf: {exc}", file=sys.stderr)
        return 1
    origin = f"from {args.secrets}" if args.secrets else "generated"
    token = f"cluster token: {origin}; " if args.new_secrets else ""
    print(
        f"{token}database passwords: {origin if generated else 'unchanged'}; "
        f"oar.conf: {'changed' if changed else 'unchanged'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
