"""The node side of the registration HTTP API (see autoconf.registry for the server side).

`POST /v1/register` with the node's detection and address, `GET /v1/nodes/<host>` for what OAR
holds for a node, `GET /v1/hosts` for the cluster's /etc/hosts block,
`GET /v1/accounts` for the cluster's accounts (autoconf.accounts); the cluster token travels
in a header. Errors come back as two kinds: the server answered with an error status
(RegistryError), or it did not answer (Unreachable). What to do about them is the caller's.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any

from autoconf.accounts import ACCOUNTS_PATH
from autoconf.detect import Detection
from boot import bounded

TOKEN_HEADER = "X-OAR-Live-Token"
HOST_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")  # what `hostname` gets: no options

# One registration runs several OAR commands on the server (1.5-3 s each under emulation,
# serialised with other nodes'): waiting less than that only makes the node ask again.
REGISTER_TIMEOUT = 90.0
MAX_ANSWER = 4 * 1024 * 1024  # a registration answer for a 1000-node cluster is ~200 KiB


class RegistryError(Exception):
    """The registration service answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"HTTP {status}: {message}")


class Unreachable(Exception):
    """The registration service did not answer (down, rebooting, network not up)."""


@dataclass(frozen=True)
class Registration:
    """What the server tells a node that registered."""

    hostname: str
    server_hostname: str
    oar_conf: str
    hosts: str
    changed: bool
    resources: int
    state: str = "Alive"  # what the server made of the node after checking it
    problem: str | None = None  # why it is not Alive, when it is not

    @property
    def alive(self) -> bool:
        return self.state == "Alive"

    @classmethod
    def from_json(cls, data: Any) -> Registration:
        if not isinstance(data, dict):
            raise ValueError("the answer is not a JSON object")
        for key in ("hostname", "server_hostname", "oar_conf", "hosts"):
            if not isinstance(data.get(key), str) or (key != "hosts" and not data[key]):
                raise ValueError(f"the answer has no usable {key!r}")
        for key in ("hostname", "server_hostname"):
            if not HOST_NAME.match(data[key]):
                raise ValueError(f"{key} {data[key][:64]!r} is not a host name")
        resources = data.get("resources", [])
        if not isinstance(resources, list):
            raise ValueError("'resources' is not a list")
        state, problem = data.get("state", "Alive"), data.get("problem")
        if not isinstance(state, str) or not (problem is None or isinstance(problem, str)):
            raise ValueError("'state' or 'problem' is not a string")
        return cls(
            data["hostname"],
            data["server_hostname"],
            data["oar_conf"],
            data["hosts"],
            bool(data.get("changed", False)),
            len(resources),
            state[:40],
            problem[:300] if problem else None,
        )


class RegistryClient:
    """The node side of the registration HTTP API (served by autoconf.registry)."""

    def __init__(self, base_url: str, token: str, timeout: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None,
                 timeout: float | None = None, headers: Mapping[str, str] | None = None,
                 answer_headers: dict[str, str] | None = None) -> bytes:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header(TOKEN_HEADER, self.token)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout or self.timeout) as response:
                answer = response.read(MAX_ANSWER + 1)
                if answer_headers is not None:
                    answer_headers.update(response.headers.items())
        except urllib.error.HTTPError as exc:
            raise RegistryError(exc.code, _error_text(exc.read(MAX_ANSWER))) from None
        except (urllib.error.URLError, OSError, HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unreachable(
                f"{self.base_url}: {getattr(reason, 'strerror', None) or reason}"
            ) from None
        if len(answer) > MAX_ANSWER:
            raise RegistryError(200, f"an answer larger than {MAX_ANSWER} bytes")
        return answer

    def register(self, detection: Detection, address: str) -> Registration:
        body = {"token": self.token, "detection": detection.to_json(), "address": address}
        raw = self._request("POST", "/v1/register", body,
                            timeout=max(self.timeout, REGISTER_TIMEOUT))
        try:
            return Registration.from_json(bounded.load_json(raw, MAX_ANSWER))
        except ValueError as exc:
            raise RegistryError(200, f"an unusable registration answer: {exc}") from None

    def node(self, hostname: str) -> dict[str, Any] | None:
        """The server's view of `hostname`, or None when it does not know it (404)."""
        try:
            answer = bounded.load_json(self._request("GET", f"/v1/nodes/{hostname}"), MAX_ANSWER)
        except RegistryError as exc:
            if exc.status == 404:
                return None
            raise
        except bounded.InputError as exc:
            raise RegistryError(200, f"unusable node answer ({exc.message})") from None
        return answer if isinstance(answer, dict) else {}

    def hosts(self, tag: str | None = None) -> tuple[str | None, str | None]:
        """The cluster's /etc/hosts block and its tag; (None, tag) when it is still `tag`."""
        answer_headers: dict[str, str] = {}
        try:
            text = self._request("GET", "/v1/hosts", headers={"If-None-Match": tag} if tag else
                                 None, answer_headers=answer_headers).decode(errors="replace")
        except RegistryError as exc:
            if exc.status == 304:
                return None, tag
            raise
        return text, answer_headers.get("ETag")

    def accounts(self) -> list[Any]:
        """The cluster's accounts as the server lists them (each entry checked by the caller)."""
        try:
            answer = bounded.load_json(self._request("GET", ACCOUNTS_PATH), MAX_ANSWER)
        except bounded.InputError as exc:
            raise RegistryError(200, f"unusable accounts answer ({exc.message})") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("accounts"), list):
            raise RegistryError(200, "the accounts answer has no list of accounts")
        return answer["accounts"]


def _error_text(body: bytes) -> str:
    try:
        message = bounded.load_json(body, MAX_ANSWER).get("error")
    except (bounded.InputError, AttributeError):
        message = None
    return str(message) if message else body.decode(errors="replace").strip()[:200] or "no detail"
