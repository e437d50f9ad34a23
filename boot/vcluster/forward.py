"""The virtual cluster's web port: TCP from the host's loopback to the server's web port.

`oar-vcluster up` binds a port on 127.0.0.1 of the host (nothing else is exposed), then starts
this forwarder inside the cluster's network namespace with that listening socket inherited
(`--listen-fd`): it accepts on the host's loopback and connects to the server on the private
LAN, so a browser on the host opens the cluster page, Monika, Drawgantt and /oarapi/.

Why not qemu's `hostfwd`: the VMs' qemu runs inside the namespace and the server's NIC is a tap
on its bridge, so a user-mode netdev's hostfwd would listen on the namespace's own loopback,
which the host cannot reach. Connections are bounded in number and idle time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import sys
import threading
from pathlib import Path

MAX_CONNECTIONS = 32
IDLE_SECONDS = 300.0
CONNECT_SECONDS = 10.0
CHUNK = 65536


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    """Copy until `source` ends (its end passes on: HTTP clients half-close), or fails or stays
    idle IDLE_SECONDS (then both ways end)."""
    try:
        while chunk := source.recv(CHUNK):
            sink.sendall(chunk)
        sink.shutdown(socket.SHUT_WR)
    except OSError:
        for sock in (sink, source):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


def _serve_one(client: socket.socket, target: tuple[str, int],
               slots: threading.BoundedSemaphore) -> None:
    try:
        with client, socket.create_connection(target, CONNECT_SECONDS) as upstream:
            for sock in (client, upstream):
                sock.settimeout(IDLE_SECONDS)
            back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
            back.start()
            _pipe(client, upstream)
            back.join()
    except OSError:
        pass
    finally:
        slots.release()


def serve(listener: socket.socket, target: tuple[str, int],
          max_connections: int = MAX_CONNECTIONS) -> None:
    """Accept until the listener is closed; at most `max_connections` at once (the others
    wait in the backlog)."""
    slots = threading.BoundedSemaphore(max_connections)
    while True:
        slots.acquire()
        try:
            client, _ = listener.accept()
        except OSError:
            slots.release()
            if listener.fileno() == -1:  # closed by its owner: the end of the service
                return
            raise
        threading.Thread(target=_serve_one, args=(client, target, slots), daemon=True).start()


def listen_on_loopback(port: int = 0) -> socket.socket:
    """A listening socket on the host's 127.0.0.1 (`port` 0: a free one)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind(("127.0.0.1", port))
    except OSError:
        listener.close()
        raise
    listener.listen(64)
    return listener


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m boot.vcluster.forward",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--listen-fd", type=int, required=True)
    parser.add_argument("--to", required=True, help="ADDRESS:PORT inside the namespace")
    parser.add_argument("--pid-file", type=Path, required=True,
                        help="in the cluster's state directory (which names the process)")
    args = parser.parse_args(argv)
    host, _, port = args.to.rpartition(":")
    args.pid_file.write_text(f"{os.getpid()}\n")
    listener = socket.socket(fileno=args.listen_fd)
    try:
        serve(listener, (host, int(port)))
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"oar-vcluster forward: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
