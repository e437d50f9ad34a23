"""The server's network boot service (`oar.pxe=1`), which runs on a booted OAR Live server.

`configure` decides (which interface, authoritative DHCP or proxy beside a site's server) and
writes the service's files, then (re)starts oar-live-pxe.service; `serve` is that service's
daemon (dnsmasq for DHCP + TFTP, and a read-only HTTP server); `plan` is what both share (the
plan, dnsmasq.conf, the nodes' menus); `dhcpprobe` asks a network whether a DHCP server answers.
"""
