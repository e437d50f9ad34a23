"""`oar-vcluster`, host only: boot OAR Live images as a cluster of qemu VMs on this one machine.

Never copied into the image. `cli` is the command; `plan` decides the VMs (kernel lines, qemu
specs, boot files out of the ISO), `net` makes their private network in a namespace of its own,
`qemu` runs one VM and reads its serial console, `stage` reads where a VM is in its boot from
that console (through the agent's console contract, boot.console), `state` records what is
running so `down` removes all of it, `remote` runs commands on the VMs over ssh.
"""
