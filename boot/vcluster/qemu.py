"""Boot OAR Live images under qemu on this machine and talk to them over their serial console.

Used by the end-to-end tests and by the virtual-cluster command: start a VM from an ISO, a disk
image or a kernel + initrd, with given network devices; every byte of its serial console goes
to a log file; wait for a pattern with a deadline; type on the console; log in and run commands;
shut it down cleanly (ACPI power button), killing it when it does not stop in time.

A VM the caller talks to has its console on a pair of FIFOs (qemu's pipe chardev) whose output
side holds a megabyte: qemu's emulated UART sends one byte per write, and when a write cannot be
taken (EAGAIN) qemu logs the byte and sends it again, doubling it in the log. A socket's send
buffer, charged per one-byte message, fills within a few hundred bytes whenever the reading
thread waits for the CPU; a megabyte of pipe covers a whole boot's output.

Software emulation (`-accel tcg`) is the default: KVM is not usable on the build machines.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from boot.proc import spawn

QEMU = "qemu-system-x86_64"
KILL_WAIT_SECONDS = 10  # SIGKILL'd, qemu is reaped within this
CONSOLE_PIPE_BYTES = 1 << 20  # console output qemu can write ahead of the reader (default 64 KiB)
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# Secure Boot enforced: the SMM build of OVMF, its variables with Microsoft's keys enrolled (those
# a laptop ships with, that Debian's signed shim is signed for).
OVMF_SECBOOT_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
OVMF_MS_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")


class VMError(Exception):
    """A VM did not start, did not show what was awaited in time, or a command failed."""


class Firmware(StrEnum):
    BIOS = "bios"
    UEFI = "uefi"
    SECURE_BOOT = "secure-boot"  # UEFI that starts only binaries signed by an enrolled key


@dataclass(frozen=True)
class VMSpec:
    """What to boot and how. Exactly one of iso, disk, kernel should be given."""

    name: str
    rundir: Path
    iso: Path | None = None
    disk: Path | None = None
    kernel: Path | None = None
    initrd: Path | None = None
    append: str = ""
    memory_mib: int = 1024
    cpus: int = 2
    firmware: Firmware = Firmware.BIOS
    # Each entry is a pair (netdev, device), e.g. ("user,id=n0", "virtio-net-pci,netdev=n0").
    netdevs: tuple[tuple[str, str], ...] = ()
    snapshot: bool = True  # disk writes go to a temporary overlay; the image stays unchanged
    extra_args: tuple[str, ...] = ()
    accel: str = "tcg,tb-size=256"
    netboot: bool = False  # no iso/disk/kernel: the NIC's ROM (Debian's ipxe-qemu) netboots


    @property
    def serial_log(self) -> Path:
        return self.rundir / f"{self.name}.serial.log"

    @property
    def console_pipe(self) -> Path:
        """Base name of the console FIFOs of an attached VM: PATH.in (typed) and PATH.out."""
        return self.rundir / f"{self.name}.serial"

    def argv(self, *, attached: bool = False) -> list[str]:
        """qemu's command line for this VM. `attached`: the console is on console_pipe's FIFOs
        for a caller that reads and types; otherwise on a socket nobody needs to read (qemu
        drops the output while no client is connected; the log file has it all)."""
        media = sum(x is not None for x in (self.iso, self.disk, self.kernel))
        if media != (0 if self.netboot else 1):
            raise VMError(f"{self.name}: give exactly one of iso, disk, kernel, netboot")
        if attached:
            chardev = f"pipe,id=s0,path={self.console_pipe}"
        else:
            sock = self.rundir / f"{self.name}.serial.sock"
            chardev = f"socket,id=s0,path={sock},server=on,wait=off"
        argv = [
            QEMU, "-name", self.name, "-accel", self.accel, "-m", str(self.memory_mib),
            "-smp", str(self.cpus), "-display", "none", "-no-user-config", "-nodefaults",
            "-chardev", f"{chardev},logfile={self.serial_log}",
            "-serial", "chardev:s0",
            "-monitor", f"unix:{self.rundir / f'{self.name}.monitor.sock'},server=on,wait=off",
            "-vga", "std",
        ]  # fmt: skip
        if self.firmware is not Firmware.BIOS:
            secure = self.firmware is Firmware.SECURE_BOOT
            code, variables = (OVMF_SECBOOT_CODE, OVMF_MS_VARS) if secure else (
                OVMF_CODE, OVMF_VARS)
            vars_copy = self.rundir / f"{self.name}.OVMF_VARS.fd"
            if not vars_copy.exists():
                shutil.copyfile(variables, vars_copy)
            # The secboot build keeps its variables in SMM: only firmware code may write them.
            if secure:
                argv += ["-machine", "q35,smm=on",
                         "-global", "driver=cfi.pflash01,property=secure,value=on"]
            else:
                argv += ["-machine", "q35"]
            argv += [
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
            ]  # fmt: skip
        if self.iso is not None:
            argv += ["-drive", f"file={self.iso},media=cdrom,readonly=on", "-boot", "d"]
        if self.disk is not None:
            fmt = "qcow2" if self.disk.suffix == ".qcow2" else "raw"
            argv += ["-drive", f"file={self.disk},format={fmt},if=virtio"]
            if self.snapshot:
                argv.append("-snapshot")
        if self.kernel is not None:
            argv += ["-kernel", str(self.kernel), "-append", self.append]
            if self.initrd is not None:
                argv += ["-initrd", str(self.initrd)]
        if self.netboot:  # retry every 5 s until a netboot server answers, as a PXE farm does
            argv += ["-boot", "order=n,reboot-timeout=5000"]
        if not self.netdevs:
            argv += ["-nic", "none"]
        for netdev, device in self.netdevs:
            argv += ["-netdev", netdev, "-device", device]
        return argv + list(self.extra_args)


@dataclass
class VM:
    """A running qemu; use as a context manager so it is always stopped."""

    spec: VMSpec
    process: subprocess.Popen | None = None
    _console: int | None = None  # the FIFO typed into
    _output: int | None = None  # the FIFO qemu writes the console to
    _drain: threading.Thread | None = None
    _offset: int = 0
    _markers: int = field(default=0)
    _owner: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def start(self) -> VM:
        if shutil.which(QEMU) is None:
            raise VMError(f"{QEMU} not found: apt-get install qemu-system-x86")
        self.spec.rundir.mkdir(parents=True, exist_ok=True)
        self.spec.serial_log.unlink(missing_ok=True)
        self.spec.serial_log.touch()
        self._open_console()
        try:
            with open(self.spec.rundir / f"{self.spec.name}.qemu.log", "wb") as stderr:
                # Until stop() powers it off, qemu is killed with any exit of our block.
                self.process = self._owner.enter_context(spawn(
                    self.spec.argv(attached=True), stdout=stderr, stderr=stderr,
                    stop_signal=signal.SIGKILL, grace=KILL_WAIT_SECONDS))
        except BaseException:
            self._close_console()
            raise
        return self

    def __enter__(self) -> VM:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _open_console(self) -> None:
        """Make the console FIFOs and open both ends qemu does not: opened read-write, neither
        open waits for qemu, and neither sees an end of file while qemu restarts its side."""
        self._close_console()
        for suffix in ("in", "out"):
            fifo = Path(f"{self.spec.console_pipe}.{suffix}")
            fifo.unlink(missing_ok=True)
            os.mkfifo(fifo, 0o600)
        base = self.spec.console_pipe
        self._console = os.open(f"{base}.in", os.O_RDWR | os.O_CLOEXEC)
        self._output = os.open(f"{base}.out", os.O_RDWR | os.O_CLOEXEC)
        fcntl.fcntl(self._output, fcntl.F_SETPIPE_SZ, CONSOLE_PIPE_BYTES)
        # qemu copies the console to the log file; reading the FIFO keeps it from filling.
        self._drain = threading.Thread(target=self._discard_console_output, args=(self._output,),
                                       daemon=True)
        self._drain.start()

    def _discard_console_output(self, fd: int) -> None:
        with contextlib.suppress(OSError, ValueError):
            while self._output == fd:
                if select.select([fd], [], [], 0.5)[0]:
                    os.read(fd, 1 << 16)

    def _close_console(self) -> None:
        fds, self._console, self._output = (self._console, self._output), None, None
        if self._drain is not None:
            self._drain.join(timeout=2)
            self._drain = None
        for fd in fds:
            if fd is not None:
                os.close(fd)
        for suffix in ("in", "out"):
            Path(f"{self.spec.console_pipe}.{suffix}").unlink(missing_ok=True)

    def _check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            log = self.spec.rundir / f"{self.spec.name}.qemu.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise VMError(f"{self.spec.name}: qemu exited ({self.process.returncode}): {tail}")

    def log_text(self) -> str:
        return self.spec.serial_log.read_bytes().decode("utf-8", errors="replace")

    def wait_for(self, pattern: str, timeout: float, *, from_start: bool = False) -> re.Match:
        """Wait until `pattern` (a regex, multiline) appears on the console after the last match."""
        regex = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        start = 0 if from_start else self._offset
        while True:
            text = self.log_text()
            match = regex.search(text, start)
            if match:
                self._offset = match.end()
                return match
            self._check_alive()
            if time.monotonic() > deadline:
                tail = text[-1500:]
                raise VMError(
                    f"{self.spec.name}: {pattern!r} not seen on the console within {timeout:.0f}s;"
                    f" console ends with:\n{tail}"
                )
            time.sleep(0.5)

    def send(self, text: str) -> None:
        """Type `text` on the serial console."""
        if self._console is None:
            raise VMError(f"{self.spec.name}: not started")
        data = text.encode()
        while data:
            data = data[os.write(self._console, data):]

    def login(self, user: str, password: str, timeout: float = 300) -> None:
        """Log in on the serial console and make the shell quiet and machine-readable."""
        # Not anchored at the line's end: console messages may follow the prompt on its line.
        self.wait_for(r"\blogin: ", timeout)
        self.send(f"{user}\n")
        self.wait_for(r"Password: ", 30)
        self.send(f"{password}\n")
        self.wait_for(r"[$#] *$", 60)
        self.run(
            "bind 'set enable-bracketed-paste off'; stty -echo cols 1000;"
            " export PS1='$ ' TERM=dumb; sudo -n dmesg -n 1 || true",
            60,
        )

    def run(self, command: str, timeout: float, *, check: bool = True) -> tuple[int, str]:
        """Run a shell command line in the logged-in session: (exit status, output)."""
        self._markers += 1
        tag = f"OARLIVE{uuid.uuid4().hex[:8]}"
        self.send(f"echo {tag}BEGIN; {command}; echo {tag}END $?\n")
        # Not the echoed command line itself; bash may prefix its own escape codes.
        self.wait_for(rf"(?<!echo ){tag}BEGIN\r?$", timeout)
        begin = self._offset
        match = self.wait_for(rf"(?<!echo ){tag}END (\d+)\r?$", timeout)
        output = self.log_text()[begin : match.start()].replace("\r", "").strip("\n")
        status = int(match.group(1))
        if check and status != 0:
            raise VMError(f"{self.spec.name}: `{command}` exited {status}:\n{output}")
        return status, output

    def monitor(self, command: str) -> None:
        """Send one command to qemu's human monitor."""
        path = self.spec.rundir / f"{self.spec.name}.monitor.sock"
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as mon:
            mon.connect(str(path))
            mon.sendall(f"{command}\n".encode())
            time.sleep(0.2)

    def stop(self, timeout: float = 60) -> None:
        """Power the VM off (ACPI), or kill qemu after `timeout` seconds."""
        if self.process is None:
            return
        try:
            if self.process.poll() is None and timeout > 0:
                with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                    self.monitor("system_powerdown")
                    self.process.wait(timeout)
        finally:
            self._owner.close()  # kills a qemu still there, reaps it
        self._close_console()
        monitor = self.spec.rundir / f"{self.spec.name}.monitor.sock"
        monitor.unlink(missing_ok=True)
        self.process = None

