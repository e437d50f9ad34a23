"""The virtual cluster's web port: bytes both ways between this machine's loopback and a server."""

from __future__ import annotations

import socket
import threading

from boot.vcluster import forward


def echo_server() -> socket.socket:
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                while data := conn.recv(4096):
                    conn.sendall(data.upper())

    threading.Thread(target=serve, daemon=True).start()
    return server


def test_a_connection_to_the_loopback_port_reaches_the_target_and_back():
    target = echo_server()
    listener = forward.listen_on_loopback(0)
    assert listener.getsockname()[0] == "127.0.0.1"  # nothing else is exposed
    threading.Thread(target=forward.serve, args=(listener, target.getsockname()),
                     daemon=True).start()
    for _ in range(3):  # one after another: each gets its own upstream connection
        with socket.create_connection(listener.getsockname(), timeout=10) as client:
            client.sendall(b"cluster page")
            client.shutdown(socket.SHUT_WR)
            assert client.recv(4096) == b"CLUSTER PAGE"
    listener.close()
    target.close()


def test_a_busy_port_is_an_error_for_the_launcher_to_explain():
    first = forward.listen_on_loopback(0)
    try:
        forward.listen_on_loopback(first.getsockname()[1]).close()
    except OSError:
        pass
    else:
        raise AssertionError("two listeners on one port")
    finally:
        first.close()
