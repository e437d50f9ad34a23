"""A virtual cluster's plan: machines, their firmware, and the qemu each one gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from boot.vcluster import plan as vplan
from boot.vcluster.state import ClusterState


def state_of(tmp_path: Path, machines) -> ClusterState:
    return ClusterState(tmp_path, "oarvc-0123abcd", iso=str(tmp_path / "oar-live.iso"),
                        accel="tcg", machines=machines)


def test_the_firmware_list_applies_per_node_and_repeats_its_last_value():
    plan = vplan.plan_machines(3, [1], [1024], 1, 1024, ["bios", "uefi"])
    assert [m.firmware for m in plan] == ["bios", "bios", "uefi", "uefi"]  # the server: BIOS


def test_an_unknown_firmware_is_one_sentence_naming_the_choices():
    with pytest.raises(vplan.VClusterError, match="--firmware: unknown coreboot .*bios, uefi"):
        vplan.plan_machines(1, [1], [1024], 1, 1024, ["coreboot"])


def test_a_diskless_uefi_node_netboots_with_the_firmware_pxe_not_a_nic_rom(tmp_path):
    plan = vplan.plan_machines(2, [1], [1024], 1, 1024, ["bios", "uefi"])
    state = state_of(tmp_path, plan)
    bios = vplan.vm_spec(state, plan[1], tmp_path / "k", tmp_path / "i", "", netboot=True).argv()
    uefi = vplan.vm_spec(state, plan[2], tmp_path / "k", tmp_path / "i", "", netboot=True).argv()
    assert not any("pflash" in a for a in bios) and not any("romfile=" in a for a in bios)
    assert any(a.startswith("if=pflash") and "OVMF_CODE" in a for a in uefi)
    nic = uefi[uefi.index("-device") + 1]
    assert nic.endswith(",romfile=") and plan[2].mac in nic  # OVMF's own PXE -> shimx64.efi


def test_a_secure_boot_node_gets_ovmf_enforcing_it_and_netboots_without_a_nic_rom(tmp_path):
    plan = vplan.plan_machines(1, [1], [1024], 1, 1024, ["secure-boot"])
    spec = vplan.vm_spec(state_of(tmp_path, plan), plan[1], tmp_path / "k", tmp_path / "i", "",
                         netboot=True)
    argv = spec.argv()
    assert any("OVMF_CODE_4M.secboot.fd" in a for a in argv) and "q35,smm=on" in argv
    assert argv[argv.index("-device") + 1].endswith(",romfile=")


def test_a_uefi_node_booted_from_the_iso_keeps_the_nic_rom_and_gets_ovmf(tmp_path):
    plan = vplan.plan_machines(1, [2], [1536], 1, 1024, ["uefi"])
    argv = vplan.vm_spec(state_of(tmp_path, plan), plan[1], tmp_path / "k", tmp_path / "i",
                         "boot=live").argv()
    assert "-kernel" in argv and any("pflash" in a for a in argv)
    assert not any("romfile=" in a for a in argv)
    assert argv[argv.index("-smp") + 1] == "2" and argv[argv.index("-m") + 1] == "1536"
