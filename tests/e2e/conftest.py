"""The OAR Live image the end-to-end tests boot: built once per test session by build-iso.

OAR_LIVE_IMAGE picks the recipe (`trixie`, the default, or `bookworm`); set OAR_LIVE_OUT to a
folder holding that image's oar-live.iso / .qcow2 / .tgz / .yaml to test already built artifacts
instead (checkpoints make a rebuild with unchanged sources cheap anyway).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Image:
    """One OAR Live recipe and what its booted machines show."""

    name: str
    recipe: Path
    cgroup_cmdline: str        # on every boot entry ("" on cgroup v2)
    oar_version: str           # the recipe's oar_version

    def units(self, names: tuple[str, ...]) -> tuple[str, ...]:
        """Those of the OAR units `names` this image's OAR has (2.5 has no timers)."""
        return names if self.oar_version != "2.5" else tuple(
            n for n in names if not n.endswith(".timer"))

    def job_cgroup(self, user: str, job: int) -> re.Pattern[str]:
        """Where a job of `user` runs: OAR 2.5's cpuset, or OAR 2.6's systemd slice."""
        if self.cgroup_cmdline:
            return re.compile(re.escape(f"/oar/{user}_{job}"))
        return re.compile(rf"0::/oar\.slice/oar-u\d+\.slice/oar-u\d+-j{job}\.slice")


IMAGES = {
    "bookworm": Image("bookworm", PROJECT / "recipes" / "debian-bookworm-x86_64-oar-2.5-iso.yaml",
                      "systemd.unified_cgroup_hierarchy=0", "2.5"),
    "trixie": Image("trixie", PROJECT / "recipes" / "debian-trixie-x86_64-oar-2.6-iso.yaml", "",
                    "2.6"),
}


@pytest.fixture(scope="session")
def image() -> Image:
    name = os.environ.get("OAR_LIVE_IMAGE", "trixie")
    if name not in IMAGES:
        raise pytest.UsageError(f"OAR_LIVE_IMAGE={name}: choose among {', '.join(IMAGES)}")
    return IMAGES[name]


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory, image: Image) -> Path:
    given = os.environ.get("OAR_LIVE_OUT")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("out")
    build_iso = Path(sys.executable).parent / "build-iso"
    subprocess.run(
        [str(build_iso), str(image.recipe), "--set", "output=iso,tgz,qcow2",
         "--set", f"out_dir={out}"],  # fmt: skip
        check=True,
        cwd=out,
    )
    return out
