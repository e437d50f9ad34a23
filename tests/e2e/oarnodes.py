"""`oarnodes` output read back as the resources OAR has: host, state, cpuset and id of each."""

from __future__ import annotations

import re


def parse(out: str) -> list[dict[str, str]]:
    """One dict per resource block of `oarnodes` (network_address, state, cpuset, resource_id)."""
    found = []
    for block in re.split(r"\n\s*\n", out.strip()):
        fields = dict(re.findall(r"^\s*(\w+)\s*:\s*(.*?)\s*$", block, re.M))
        if "network_address" not in fields:
            continue
        props = dict(re.findall(r"(\w+)=([^,]*)", fields.get("properties", "")))
        found.append({"host": fields["network_address"], "state": fields.get("state", ""),
                      "cpuset": props.get("cpuset", "").strip(),
                      "id": fields.get("resource_id", "")})
    return found
