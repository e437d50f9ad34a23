"""The on-boot agent that turns machines booting the OAR Live image into one OAR cluster.

Runs inside the image, on top of `boot` (processes, files, the kernel line, the console lines,
network interfaces, the PXE service), which it imports; nothing else in the project imports it
but its tests and benchmarks. `agent` is `oar-autoconf boot`: the settings (`config`), the
keyboard and role prompts (`keyboard`, `prompt`), the machine (`detect`, `resources`), then
the role: `server` (PostgreSQL, OAR, the registration service `registry` and its `beacon`) or
`node` (finds its server with `discover`, registers through `client`, keeps registered).
"""
