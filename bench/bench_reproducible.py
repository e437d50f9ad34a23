"""Benchmark: what reproducible exports and the signed boot chain cost (time, ISO size).

Measured in one run on this machine, all figures from this run:
- `normalised_s` / `plain_s`: the export commands whose options reproducibility changes, run
  on the same tree (an OAR Live tgz of this machine, unpacked: OAR_LIVE_TGZ, else the newest
  /var/tmp/recipes-out/*/oar-live.tgz), with the options the recipe uses (SOURCE_DATE_EPOCH
  for mksquashfs and xorriso, tar --sort=name --clamp-mtime without atime/ctime, gzip -n) and
  without them (the options before), then the disk's root filesystem (`mkfs.ext4 -d`, and
  for the reproducible one the file dates clamped and every inode dated, builder.ext4dates).
  Best of 2 each. Target: ratio <= 1.05;
- `signed_chain_mb`: the ISO size the Secure Boot chain adds: the UEFI FAT image with Debian's
  signed shim, grub and MokManager (as export_iso makes it) minus the former unsigned
  grub-mkstandalone image (when grub-efi-amd64-bin is on this host), in MB (10^6 bytes), and
  `netboot_loaders_mb`, what the ISO's netboot/ folder adds (signed shim, network grub and
  MokManager, served to UEFI nodes by a booted server).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from bench.timing import verdict
from builder import ext4dates

TARGET = 1.05
EPOCH = "1735689600"
SIGNED = ("usr/lib/shim/shimx64.efi.signed", "usr/lib/shim/mmx64.efi.signed",
          "usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed")


def _tgz() -> Path:
    given = os.environ.get("OAR_LIVE_TGZ")
    found = [Path(given)] if given else sorted(
        (Path(p) for p in glob.glob("/var/tmp/recipes-out/*/oar-live.tgz")),
        key=lambda p: p.stat().st_mtime)
    if not found or not found[-1].exists():
        raise RuntimeError("no OAR Live tgz: build one (--set output=tgz) or set OAR_LIVE_TGZ")
    return found[-1]


def _exports(tree: Path, work: Path, normalised: bool) -> float:
    env = dict(os.environ, SOURCE_DATE_EPOCH=EPOCH) if normalised else {
        k: v for k, v in os.environ.items() if k != "SOURCE_DATE_EPOCH"}
    tar_opts = ["--sort=name", f"--mtime=@{EPOCH}", "--clamp-mtime", "--format=posix",
                "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime"] \
        if normalised else []
    gz = "pigz -3 -n" if normalised else "pigz -3"
    iso_tree = work / "iso"
    shutil.rmtree(iso_tree, ignore_errors=True)
    (iso_tree / "live").mkdir(parents=True)
    started = time.monotonic()
    subprocess.run(["mksquashfs", str(tree), str(iso_tree / "live/filesystem.squashfs"),
                    "-noappend", "-quiet", "-comp", "zstd", "-Xcompression-level", "3"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    if normalised:
        subprocess.run(["find", str(iso_tree), "-exec", "touch", "-h", "-d", f"@{EPOCH}", "{}",
                        "+"], check=True)
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-o", str(work / "x.iso"), "-r",
                    "-J", str(iso_tree)], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["tar", "--numeric-owner", "--xattrs", "--acls", "-I", gz, "-cf",
                    str(work / "x.tgz"), *tar_opts, "-C", str(tree), "."], check=True, env=env)
    _root_filesystem(tree, work / "root.ext4", normalised)
    return time.monotonic() - started


def _root_filesystem(tree: Path, image: Path, normalised: bool) -> None:
    """The disk outputs' root filesystem as export_disk makes it, with or without its dates."""
    image.unlink(missing_ok=True)
    size_mib = int(subprocess.run(["du", "-sm", str(tree)], capture_output=True, text=True,
                                  check=True).stdout.split()[0]) * 11 // 10 + 256
    env = dict(os.environ, E2FSPROGS_FAKE_TIME=EPOCH) if normalised else None
    if normalised:
        subprocess.run(["find", str(tree), "-xdev", "-newermt", f"@{EPOCH}", "-exec", "touch",
                        "-h", "-d", f"@{EPOCH}", "{}", "+"], check=True)
    subprocess.run(["mkfs.ext4", "-q", "-d", str(tree), str(image), f"{size_mib}M"], check=True,
                   env=env, stdout=subprocess.DEVNULL)
    if normalised:
        ext4dates.set_dates(image, int(EPOCH))


def _fat_image_bytes(files: dict[str, Path], work: Path) -> int:
    img = work / "efiboot.img"
    img.unlink(missing_ok=True)
    size_kib = sum(p.stat().st_size for p in files.values()) // 1024 + 512
    subprocess.run(["mkfs.vfat", "-C", str(img), str(size_kib)], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run(["mmd", "-i", str(img), "::/EFI", "::/EFI/boot"], check=True)
    for name, path in files.items():
        subprocess.run(["mcopy", "-i", str(img), str(path), f"::/EFI/boot/{name}"], check=True)
    return img.stat().st_size


def _signed_debs(work: Path) -> Path | None:
    """Debian's signed shim, shim helpers and GRUB from the apt cache, unpacked: their root."""
    debs = sorted(glob.glob("/var/cache/oar-live/apt/shim-signed_*.deb")
                  + glob.glob("/var/cache/oar-live/apt/shim-helpers-amd64-signed_*.deb")
                  + glob.glob("/var/cache/oar-live/apt/grub-efi-amd64-signed_*.deb"))
    if len(debs) < 3:
        return None
    root = work / "signed"
    for deb in debs:
        subprocess.run(["dpkg-deb", "-x", deb, str(root)], check=True)
    return root


def _signed_chain_mb(root: Path | None, work: Path) -> float | None:
    if root is None or shutil.which("grub-mkstandalone") is None or not Path(
            "/usr/lib/grub/x86_64-efi/modinfo.sh").exists():  # grub-efi-amd64-bin: not here
        return None
    signed = _fat_image_bytes({Path(p).name: root / p for p in SIGNED}, work)
    unsigned_efi = work / "bootx64.efi"
    cfg = work / "embedded.cfg"
    cfg.write_text("search --no-floppy --set=root --label OARLIVE\n"
                   "configfile ($root)/boot/grub/grub.cfg\n")
    subprocess.run(["grub-mkstandalone", "-O", "x86_64-efi", "-o", str(unsigned_efi),
                    "--modules=part_gpt part_msdos iso9660 search search_label", "--locales=",
                    "--themes=", "--fonts=", f"boot/grub/grub.cfg={cfg}"], check=True)
    unsigned = _fat_image_bytes({"bootx64.efi": unsigned_efi}, work)
    return round((signed - unsigned) / 1e6, 2)


def _netboot_loaders_mb(root: Path | None) -> float | None:
    if root is None:
        return None
    files = [root / "usr/lib/shim/shimx64.efi.signed", root / "usr/lib/shim/mmx64.efi.signed",
             root / "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"]
    if not all(f.is_file() for f in files):
        return None
    return round(sum(f.stat().st_size for f in files) / 1e6, 2)


def run() -> dict:
    work = Path(tempfile.mkdtemp(prefix="oar-live-bench-repro-", dir="/var/tmp"))
    try:
        tree = work / "tree"
        tree.mkdir()
        subprocess.run(["tar", "-xzf", str(_tgz()), "-C", str(tree), "--numeric-owner"],
                       check=True)
        plain = min(_exports(tree, work, False) for _ in range(2))
        normalised = min(_exports(tree, work, True) for _ in range(2))
        ratio = normalised / plain
        signed = _signed_debs(work)
        return {
            "plain_s": round(plain, 1),
            "normalised_s": round(normalised, 1),
            "signed_chain_mb": _signed_chain_mb(signed, work),
            "netboot_loaders_mb": _netboot_loaders_mb(signed),
            "verdicts": [verdict("reproducible exports / plain exports", ratio, TARGET)],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
