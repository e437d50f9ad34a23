"""What every booted OAR Live machine runs below the agent, and the host's qemu launcher.

The lower layer of the project, copied into the image: the process runner (`proc`), file
writes (`files`), the kernel command line (`cmdline`), network interfaces (`netif`), the boot
menus (`menus`), the systemd units (`systemd/`) and the server's netboot service (`pxe`). It
imports no other package of the project. `boot.vcluster` (oar-vcluster) runs on the host
only, imports the rest of `boot`, and is never copied into the image.
"""
