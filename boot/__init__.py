"""Booting OAR Live images: kernel command-line contract, units, PXE service, qemu launcher."""
