"""The node's registration client: an answer that is oversized, not UTF-8 or too deep is refused."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from autoconf.client import MAX_ANSWER, RegistryClient, RegistryError


@contextmanager
def answering(status: int, body: bytes) -> Iterator[RegistryClient]:
    """A client of a server on 127.0.0.1 that answers every request with `status` and `body`."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _answer(self) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer  # noqa: N815 - stdlib names

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield RegistryClient(f"http://127.0.0.1:{server.server_address[1]}", "t", timeout=10)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.mark.parametrize("body,message", [
    (b"x" * (MAX_ANSWER + 10), f"an answer larger than {MAX_ANSWER} bytes"),
    (b"[" * 5000 + b"]" * 5000, "nested deeper than"),
    (b'{"hostname": "caf\xe9"}', "not UTF-8 text (byte 0xe9)"),
])
def test_an_unusable_node_answer_is_one_registry_error(body, message):
    with answering(200, body) as client, pytest.raises(RegistryError) as exc:
        client.node("node-525400000001")
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_an_error_answer_nested_too_deep_is_shown_as_text():
    with answering(400, b"[" * 5000) as client, pytest.raises(RegistryError) as exc:
        client.node("node-525400000001")
    assert exc.value.status == 400 and "[[[" in str(exc.value)


@pytest.mark.parametrize("body,message", [
    (b'{"accounts": {"name": "x"}}', "no list of accounts"),
    (b'["alice"]', "no list of accounts"),
    (b"[" * 5000 + b"]" * 5000, "nested deeper than"),
])
def test_an_unusable_accounts_answer_is_one_registry_error(body, message):
    with answering(200, body) as client, pytest.raises(RegistryError) as exc:
        client.accounts()
    assert message in str(exc.value) and "\n" not in str(exc.value)


def test_the_accounts_answer_is_the_servers_list_unchecked():
    with answering(200, b'{"accounts": [{"name": "alice"}, 3]}') as client:
        assert client.accounts() == [{"name": "alice"}, 3]  # each entry is checked by the node
