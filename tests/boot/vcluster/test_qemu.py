"""qemu command lines for the VMs the tests and the virtual cluster boot."""

from pathlib import Path

import pytest

from boot.vcluster.qemu import VM, Firmware, VMError, VMSpec


def option_values(argv, option):
    return [argv[i + 1] for i, a in enumerate(argv) if a == option]


def test_iso_vm_boots_the_cdrom_with_serial_log_and_software_emulation(tmp_path):
    argv = VMSpec("n1", tmp_path, iso=Path("/x/oar-live.iso")).argv()
    assert argv[0] == "qemu-system-x86_64"
    assert option_values(argv, "-accel") == ["tcg,tb-size=256"]
    assert option_values(argv, "-m") == ["1024"] and option_values(argv, "-smp") == ["2"]
    assert "file=/x/oar-live.iso,media=cdrom,readonly=on" in option_values(argv, "-drive")
    chardev = option_values(argv, "-chardev")[0]
    assert f"logfile={tmp_path}/n1.serial.log" in chardev and "server=on" in chardev
    assert option_values(argv, "-nic") == ["none"]  # no network unless asked


def test_disk_vm_keeps_the_image_unchanged_and_gets_its_network(tmp_path):
    spec = VMSpec(
        "d",
        tmp_path,
        disk=Path("/x/oar-live.qcow2"),
        netdevs=(("socket,id=n0,mcast=230.0.0.1:1234", "virtio-net-pci,netdev=n0"),),
    )
    argv = spec.argv()
    assert "file=/x/oar-live.qcow2,format=qcow2,if=virtio" in option_values(argv, "-drive")
    assert "-snapshot" in argv
    assert option_values(argv, "-netdev") == ["socket,id=n0,mcast=230.0.0.1:1234"]
    assert "-nic" not in argv


def test_kernel_vm_passes_its_command_line_and_uefi_uses_a_private_vars_copy(tmp_path, monkeypatch):
    vars_file = tmp_path / "vars.fd"
    vars_file.write_bytes(b"v")
    monkeypatch.setattr("boot.vcluster.qemu.OVMF_VARS", vars_file)
    spec = VMSpec("k", tmp_path, kernel=Path("/k"), initrd=Path("/i"), append="boot=live a=b",
                  firmware=Firmware.UEFI)
    argv = spec.argv()
    assert option_values(argv, "-append") == ["boot=live a=b"]
    assert option_values(argv, "-initrd") == ["/i"]
    pflash_vars = f"if=pflash,format=raw,unit=1,file={tmp_path}/k.OVMF_VARS.fd"
    assert pflash_vars in option_values(argv, "-drive")
    assert (tmp_path / "k.OVMF_VARS.fd").read_bytes() == b"v"


def test_secure_boot_uses_the_smm_firmware_with_microsofts_keys_and_secure_flash(tmp_path,
                                                                                   monkeypatch):
    ms_vars = tmp_path / "ms.fd"
    ms_vars.write_bytes(b"microsoft keys")
    monkeypatch.setattr("boot.vcluster.qemu.OVMF_MS_VARS", ms_vars)
    argv = VMSpec("sb", tmp_path, iso=Path("/x.iso"), firmware=Firmware.SECURE_BOOT).argv()
    assert option_values(argv, "-machine") == ["q35,smm=on"]
    assert option_values(argv, "-global") == ["driver=cfi.pflash01,property=secure,value=on"]
    drives = option_values(argv, "-drive")
    assert "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.secboot.fd" \
        in drives
    assert (tmp_path / "sb.OVMF_VARS.fd").read_bytes() == b"microsoft keys"
    plain = VMSpec("u", tmp_path, iso=Path("/x.iso"), firmware=Firmware.UEFI).argv()
    assert option_values(plain, "-machine") == ["q35"] and "-global" not in plain


def test_a_vm_needs_exactly_one_boot_source(tmp_path):
    with pytest.raises(VMError, match="exactly one"):
        VMSpec("x", tmp_path, iso=Path("a"), disk=Path("b")).argv()
    with pytest.raises(VMError, match="exactly one"):
        VMSpec("x", tmp_path).argv()


def test_wait_for_reports_the_console_tail_when_the_pattern_never_comes(tmp_path):
    vm = VM(VMSpec("t", tmp_path, iso=Path("a")))
    vm.spec.serial_log.write_text("Booting...\nlogin: ")
    assert vm.wait_for(r"login: *$", 1).group(0) == "login: "
    with pytest.raises(VMError, match=r"(?s)'Password:' not seen .*login: "):
        vm.wait_for("Password:", 0.6)
