"""The running netboot service: dnsmasq (DHCP + TFTP) and a read-only HTTP server, together.

Run by oar-live-pxe.service (or by hand) once boot.pxe wrote /run/oar-live/pxe/plan.json and
dnsmasq.conf: `python3 -m boot.pxe.serve [--state DIR]`. The HTTP server listens on the
server's cluster address only and sends exactly the kernel, the initrd, the squashfs,
boot.ipxe and, for the signed GRUB, grub-http.cfg (GET and HEAD, Range for resumed downloads);
any other path is 404. dnsmasq runs in the foreground as this process's child; when either
stops, both stop.

Runs inside the image: standard library only.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import re
import signal
import sys
import threading
from pathlib import Path

from boot.proc import spawn
from boot.pxe.plan import GRUB_HTTP, IPXE_SCRIPT, STATE_DIR, Plan

__all__ = ["BootFileServer", "serve"]


class BootFileServer(http.server.ThreadingHTTPServer):
    """HTTP/1.1 server for a fixed set of files: URL name -> path."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], files: dict[str, Path]) -> None:
        self.files = dict(files)
        super().__init__(address, _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: BootFileServer
    protocol_version = "HTTP/1.1"
    server_version = "OAR-Live-netboot"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        sys.stderr.write(f"pxe http: {self.client_address[0]} {format % args}\n")

    def _file(self) -> Path | None:
        name = self.path.split("?", 1)[0].lstrip("/")
        return self.server.files.get(name)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._send(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._send(body=True)

    def _send(self, body: bool) -> None:
        path = self._file()
        try:
            handle = open(path, "rb") if path is not None else None  # noqa: SIM115
        except OSError:
            handle = None
        if handle is None:
            self.send_error(404, "not one of the netboot files")
            return
        with handle:
            size = os.fstat(handle.fileno()).st_size
            start, end = 0, size - 1
            ranged = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
            if ranged and int(ranged.group(1)) < size:
                start = int(ranged.group(1))
                end = min(int(ranged.group(2) or end), end)
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            else:
                self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(end - start + 1))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()
            if body and end >= start:
                try:
                    self.wfile.flush()
                    self.connection.sendfile(handle, start, end - start + 1)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True


def served_files(plan: Plan, state: Path) -> dict[str, Path]:
    served = {**plan.files.served(), IPXE_SCRIPT: state / "tftp" / IPXE_SCRIPT}
    if plan.files.signed_loaders:  # the signed GRUB's files, where it can name the port
        served[GRUB_HTTP] = state / "tftp" / GRUB_HTTP
    return served


def serve(state: Path) -> int:
    """Run dnsmasq and the HTTP server until SIGTERM/SIGINT or until dnsmasq exits."""
    try:
        plan = Plan.from_json(json.loads((state / "plan.json").read_text()))
    except (OSError, ValueError, KeyError) as exc:
        print(f"pxeserve: no usable {state / 'plan.json'} ({exc}): run the server role "
              "with oar.pxe=1, or `python3 -m boot.pxe.configure setup`", file=sys.stderr)
        return 2
    print(plan.announce(), flush=True)
    try:
        httpd = BootFileServer((str(plan.address.ip), plan.http_port), served_files(plan, state))
    except OSError as exc:
        print(f"pxeserve: cannot listen on {plan.address.ip}:{plan.http_port}: {exc}",
              file=sys.stderr)
        return 1
    stop = threading.Event()

    def _stop(*_: object) -> None:
        stop.set()

    with spawn(["dnsmasq", "--keep-in-foreground", f"--conf-file={state / 'dnsmasq.conf'}",
                "--log-facility=-"]) as dnsmasq:  # leaving the block stops dnsmasq
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        http_thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        http_thread.start()
        while not stop.is_set() and dnsmasq.poll() is None:
            stop.wait(0.5)
        httpd.shutdown()
        httpd.server_close()
        status = dnsmasq.poll()
    if status is None:
        return 0
    print(f"pxeserve: dnsmasq exited with status {status}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m boot.pxe.serve",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--state", type=Path, default=Path("/") / STATE_DIR)
    return serve(parser.parse_args(argv).state)


if __name__ == "__main__":
    sys.exit(main())
