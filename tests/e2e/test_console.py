"""End-to-end: the serial console the tests read is what the guest wrote, byte for byte.

The image's own kernel, booted without a root file system, prints every initcall (a few hundred
kilobytes) and panics; the test's console reader waits the while, as it does when the test
process waits for a CPU on a loaded machine. No character may be doubled or lost on the way to
the log: qemu resends (and logs again) each byte its console output could not take.
"""

from __future__ import annotations

import re
import time

import pytest

from boot.vcluster import plan
from boot.vcluster.qemu import VM, VMSpec

pytestmark = pytest.mark.e2e

MARKER = "oarlive.console=" + "".join(f"{i:03d}" for i in range(100))
READER_WAITS_SECONDS = 30


def test_a_console_reader_that_waits_for_the_cpu_loses_and_doubles_nothing(artifacts, tmp_path,
                                                                           monkeypatch):
    kernel, _, _ = plan.extract_boot_files(artifacts / "oar-live.iso", tmp_path / "boot")
    append = f"console=ttyS0,115200n8 initcall_debug loglevel=8 panic=-1 {MARKER}"
    discard = VM._discard_console_output

    def slow_reader(vm, fd):
        time.sleep(READER_WAITS_SECONDS)
        discard(vm, fd)

    monkeypatch.setattr(VM, "_discard_console_output", slow_reader)
    spec = VMSpec("console", tmp_path, kernel=kernel, append=append, cpus=1, memory_mib=512,
                  extra_args=("-no-reboot",))
    with VM(spec) as vm:
        vm.wait_for(r"Kernel panic - not syncing", 600)
        text = vm.log_text()
    assert len(text) > 96 * 1024, f"only {len(text)} bytes: initcall_debug printed less"
    lines = re.findall(r"(?:Kernel c|C)ommand line: (.*?)\r?$", text, re.M)
    assert lines == [append, append], lines
    initcalls = [line for line in text.replace("\r", "").splitlines()
                 if "] calling " in line or "] initcall " in line]
    whole = re.compile(r"\[ *\d+\.\d{6}\] (calling  \S+ @ \d+|initcall \S+ returned -?\d+ after"
                       r" \d+ usecs)")
    assert len(initcalls) > 1000, len(initcalls)
    assert [line for line in initcalls if not whole.fullmatch(line)] == []
