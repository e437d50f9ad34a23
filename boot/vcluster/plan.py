"""What a virtual cluster is made of before it runs: the VMs, their kernel lines, their qemu.

From the ISO (read with xorriso, never mounted) come the kernel, the initrd and the live
system's own kernel keys; each VM gets them plus its role pre-answered (boot.vcluster.cli starts
them). Nothing here starts a process but xorriso.
"""

from __future__ import annotations

from pathlib import Path

from boot.proc import run
from boot.vcluster import net as vnet
from boot.vcluster.qemu import Firmware, VMSpec
from boot.vcluster.state import ClusterState, Machine


class VClusterError(Exception):
    """A sentence for the user: what went wrong and, where useful, what to do."""


def base_cmdline(isolinux_cfg: str) -> str:
    """The live system's own kernel keys, from the ISO's first `boot=live` menu entry.

    What the menus add per entry (initrd=, console=, oar.*) is left out: the launcher sets it.
    """
    for line in isolinux_cfg.splitlines():
        words = line.split()
        if words and words[0].lower() == "append" and "boot=live" in words:
            keep = [w for w in words[1:] if not w.startswith(("initrd=", "console=", "oar."))]
            return " ".join(keep)
    raise VClusterError("the ISO's isolinux.cfg has no `boot=live` entry: is it an OAR Live ISO?")


def kernel_cmdline(base: str, machine: Machine, nbmin: int, pxe: bool = False) -> str:
    """One VM's kernel line: the role pre-answered, nothing asked, console on the serial log.

    A kernel that panics restarts 10 s later, as cluster machines are set up to, and rejoins:
    under emulation a guest's kernel sometimes dies early in a boot (seen after reboots under
    TCG: "Fatal exception in interrupt"), and a VM that stays dead holds up its cluster.
    """
    keys = [base, "console=ttyS0,115200n8", f"oar.role={machine.role}", "oar.timeout=0",
            "oar.keymap=us", "panic=10"]
    if machine.role == "server":
        keys.append(f"oar.nbmin={nbmin}")
        if pxe:
            keys.append("oar.pxe=1")
    return " ".join(keys)


def extract_boot_files(iso: Path, dest: Path) -> tuple[Path, Path, str]:
    """vmlinuz, initrd and the base kernel line out of the ISO (xorriso, no mount)."""
    dest.mkdir(parents=True, exist_ok=True)
    kernel, initrd, menu = dest / "vmlinuz", dest / "initrd.img", dest / "isolinux.cfg"
    if not (kernel.exists() and initrd.exists() and menu.exists()):
        run(["xorriso", "-osirrox", "on", "-indev", iso,
             "-extract", "/live/vmlinuz", kernel, "-extract", "/live/initrd.img", initrd,
             "-extract", "/isolinux/isolinux.cfg", menu])  # fmt: skip
    return kernel, initrd, base_cmdline(menu.read_text())


# per node: SeaBIOS, OVMF, or OVMF enforcing Secure Boot (Microsoft's keys enrolled)
FIRMWARES = {"bios": Firmware.BIOS, "uefi": Firmware.UEFI, "secure-boot": Firmware.SECURE_BOOT}


def is_uefi(firmware: str) -> bool:
    return FIRMWARES.get(firmware, Firmware.BIOS) is not Firmware.BIOS


def plan_machines(nodes: int, smp: list[int], mem: list[int], server_smp: int,
                  server_mem: int, firmware: list[str] | None = None) -> tuple[Machine, ...]:
    """The server (index 0) and nodes 1..N; the nodes' CPU, memory and firmware lists repeat
    their last value."""
    if nodes < 1:
        raise VClusterError("--nodes must be at least 1")
    firmware = firmware or ["bios"]
    unknown = sorted(set(firmware) - set(FIRMWARES))
    if unknown:
        raise VClusterError(f"--firmware: unknown {', '.join(unknown)} "
                            f"(one of {', '.join(FIRMWARES)} per node)")

    def pick(values: list, i: int):
        return values[min(i, len(values) - 1)]

    machines = [Machine("server", "server", 0, server_smp, server_mem, vnet.mac_address(0),
                        vnet.ip_address(0))]
    for i in range(1, nodes + 1):
        machines.append(Machine(f"node-{i}", "node", i, pick(smp, i - 1), pick(mem, i - 1),
                                vnet.mac_address(i), vnet.ip_address(i),
                                firmware=pick(firmware, i - 1)))
    return tuple(machines)


def vm_spec(state: ClusterState, machine: Machine, kernel: Path, initrd: Path,
            append: str, netboot: bool = False) -> VMSpec:
    """The qemu VM of `machine`: the ISO's kernel and the ISO as CD, or diskless (`netboot`).

    A diskless BIOS machine netboots with its NIC's ROM (Debian's ipxe-qemu); a diskless UEFI
    machine with OVMF's own PXE and no NIC ROM, as a real UEFI machine does: the server must
    hand it its UEFI loader (Debian's signed shim and network grub; with `secure-boot`, OVMF
    starts nothing unsigned).
    """
    uefi = is_uefi(machine.firmware)
    tap = f"tap,id=n0,ifname={vnet.tap_name(machine.index)},script=no,downscript=no"
    nic = f"virtio-net-pci,netdev=n0,mac={machine.mac}" + (",romfile=" if uefi and netboot else "")
    common = dict(memory_mib=machine.memory_mib, cpus=machine.cpus, accel=state.accel,
                  firmware=FIRMWARES[machine.firmware], netdevs=((tap, nic),))
    if netboot:
        return VMSpec(machine.name, state.state_dir, netboot=True, **common)
    return VMSpec(machine.name, state.state_dir, kernel=kernel, initrd=initrd, append=append,
                  extra_args=("-drive", f"file={state.iso},media=cdrom,readonly=on"), **common)
