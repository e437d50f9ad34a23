"""The OAR Live image the end-to-end tests boot: built once per test session by build-iso.

Set OAR_LIVE_OUT to a folder holding oar-live.iso / .qcow2 / .tgz / .yaml to test already built
artifacts instead (checkpoints make a rebuild with unchanged sources cheap anyway).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
RECIPE = PROJECT / "recipes" / "debian-bookworm-x86_64-oar-2.5-iso.yaml"


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    given = os.environ.get("OAR_LIVE_OUT")
    if given:
        return Path(given)
    out = tmp_path_factory.mktemp("out")
    build_iso = Path(sys.executable).parent / "build-iso"
    subprocess.run(
        [str(build_iso), str(RECIPE), "--set", "output=iso,tgz,qcow2",
         "--set", f"out_dir={out}"],  # fmt: skip
        check=True,
        cwd=out,
    )
    return out
