"""End-to-end: the same inputs give the same bytes.

Two builds of the recipe with the same build secrets file (`--set secrets=FILE`), the same
`source_date_epoch` and the same apt cache, one after the other into the same out_dir. The
second restores the system from the first one's checkpoints, so this proves the steps every
build runs again: personalize (secrets, the job account's password, the database's roles) and
every export (squashfs, ISO, tgz, qcow2, manifest). A fresh system (bootstrap on) is not built
twice here: that costs a full build, ~4 minutes, in CI. When the bytes differ the test names
the first file that differs inside (the tgz holds the same tree as the squashfs).

CI cost: two builds that restore every checkpoint (~1 minute each) and the comparisons.
"""

from __future__ import annotations

import hashlib
import secrets
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

OUTPUTS = ("oar-live.iso", "oar-live.tgz", "oar-live.qcow2", "oar-live.manifest.yaml",
           "oar-live.yaml")
EPOCH = "1735689600"  # 2025-01-01T00:00:00Z


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _secrets_file(tmp_path: Path) -> Path:
    key = tmp_path / "oar_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    text = "".join(f"{name}: {secrets.token_hex(24)}\n"
                   for name in ("token", "db_password", "db_password_ro", "job_user_password"))
    indented = "".join(f"  {line}\n" for line in key.read_text().splitlines())
    path = tmp_path / "build-secrets.yaml"
    path.write_text(text + "oar_ssh_key: |\n" + indented)
    path.chmod(0o600)
    return path


def _build(image, cwd: Path, given: Path) -> Path:
    build_iso = Path(sys.executable).parent / "build-iso"
    out = cwd / "out"
    subprocess.run(
        [str(build_iso), str(image.recipe), "--set", "output=iso,tgz,qcow2",
         "--set", f"out_dir={out}", "--set", f"secrets={given}",
         "--set", f"source_date_epoch={EPOCH}"],  # fmt: skip
        check=True, cwd=cwd,
    )
    return out


def _members(path: Path):
    """(name, metadata, content sha256) of every member of a tarball, in its order."""
    with tarfile.open(path) as tar:
        for member in tar:
            content = ""
            if member.isfile():
                content = hashlib.sha256(tar.extractfile(member).read()).hexdigest()
            metadata = (member.mode, member.uid, member.gid, member.mtime, member.linkname,
                        member.size, sorted(member.pax_headers.items()))
            yield member.name, metadata, content


def first_difference_in_tarballs(first: Path, second: Path) -> str:
    """The first member whose name, metadata or content differs, said in one line."""
    for one, two in zip(_members(first), _members(second), strict=False):
        if one != two:
            what = "name" if one[0] != two[0] else "metadata" if one[1] != two[1] else "content"
            return f"{one[0]}: {what} differs ({one[1]} vs {two[1]})" if what == "metadata" \
                else f"{one[0]} vs {two[0]}: {what} differs"
    return "the member lists differ in length"


def _first_difference(name: str, first: Path, second: Path) -> str:
    if name.endswith(".tgz"):
        return first_difference_in_tarballs(first / name, second / name)
    if name.endswith(".qcow2"):
        compared = subprocess.run(["qemu-img", "compare", str(first / name), str(second / name)],
                                  capture_output=True, text=True)
        return compared.stdout.strip() or compared.stderr.strip()
    if name.endswith(".manifest.yaml"):
        lines = zip((first / name).read_text().splitlines(),
                    (second / name).read_text().splitlines(), strict=False)
        return next((f"{a!r} vs {b!r}" for a, b in lines if a != b), "the lengths differ")
    if shutil.which("diffoscope"):
        diff = subprocess.run(["diffoscope", "--max-report-size", "20000", str(first / name),
                               str(second / name)], capture_output=True, text=True)
        return diff.stdout[:3000]
    return "(no diffoscope on this host: compare the tgz, it holds the same tree)"


@pytest.fixture(scope="module")
def two_builds(image, tmp_path_factory) -> tuple[Path, Path]:
    """The outputs of two builds from the same inputs: (first, second)."""
    tmp_path = tmp_path_factory.mktemp("reproducible")
    given = _secrets_file(tmp_path)
    out = _build(image, tmp_path, given)
    first = tmp_path / "first"
    first.mkdir()
    for name in OUTPUTS:
        shutil.move(out / name, first / name)
    _build(image, tmp_path, given)
    return first, out


def _differing(names, first: Path, second: Path) -> dict[str, str]:
    return {name: _first_difference(name, first, second) for name in names
            if _sha256(first / name) != _sha256(second / name)}


def test_two_builds_from_the_same_inputs_are_the_same_bytes(two_builds):
    first, out = two_builds
    differing = _differing(OUTPUTS, first, out)
    assert differing == {}, "\n".join(f"{n}: {why}" for n, why in differing.items())
    manifest = (out / "oar-live.manifest.yaml").read_text()
    assert f"SOURCE_DATE_EPOCH={EPOCH}" in manifest and "built: 2025-01-01T00:00:00Z" in manifest
