"""Hosts and roles from an Ansible inventory (any format Ansible reads), for a profile's `inventory:`.

>>> inventory_hosts(Path("inventory.ini"))
[{'name': 'app-1', 'address': '10.0.0.5', 'backend': 'ansible', 'roles': ['app'], 'user': 'acgs', ...}]

Each inventory host becomes a profile host with backend `ansible`; its groups are its roles. Connection settings
(ansible_host, ansible_port, ansible_user, ansible_ssh_private_key_file, ansible_ssh_common_args for
`-o UserKnownHostsFile=...`) stay in the inventory, where testinfra's ansible backend reads them.
`acgs_mounts` (a list) sets the mounts SYS-04 checks on that host.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from acgs_verify.redact import one_line

INVENTORY_TIMEOUT_SECONDS = 60
_IGNORED_GROUPS = ("all", "ungrouped")
_cache: dict[tuple[str, float], list[dict[str, Any]]] = {}  # one parse per file version per process


class InventoryError(Exception):
    """The inventory could not be read; str() is one line."""


def ensure_ansible_on_path() -> None:
    """Ansible's tools are run by name: find them next to this interpreter when PATH lacks them (a venv used
    without activating it)."""
    if shutil.which("ansible-inventory") is None:
        here = Path(sys.executable).parent
        if (here / "ansible-inventory").exists():
            os.environ["PATH"] = f"{here}{os.pathsep}{os.environ.get('PATH', '')}"


def inventory_hosts(path: Path) -> list[dict[str, Any]]:
    try:
        key = (str(path), path.stat().st_mtime)
    except OSError as exc:
        raise InventoryError(f"cannot read inventory {path}: {exc.strerror}") from None
    if key not in _cache:
        _cache[key] = _hosts(_listing(path))
    return [dict(h) for h in _cache[key]]


def _listing(path: Path) -> dict[str, Any]:
    ensure_ansible_on_path()
    if shutil.which("ansible-inventory") is None:
        raise InventoryError("ansible-inventory not found: install ansible-core (pip install 'acgs-verify[ansible]')")
    try:
        res = subprocess.run(["ansible-inventory", "--list", "-i", str(path)], capture_output=True, text=True,
                             timeout=INVENTORY_TIMEOUT_SECONDS, env={**os.environ, "ANSIBLE_VERBOSITY": "0"})
    except subprocess.TimeoutExpired:
        raise InventoryError(f"ansible-inventory -i {path} took more than {INVENTORY_TIMEOUT_SECONDS} s") from None
    warnings = [x for x in res.stderr.splitlines() if "WARNING" in x or "ERROR" in x]
    if res.returncode != 0:
        raise InventoryError(f"ansible-inventory -i {path}: {one_line(warnings[-1] if warnings else res.stderr)}")
    try:
        data = json.loads(res.stdout)
    except ValueError:
        raise InventoryError(f"ansible-inventory -i {path} printed no JSON") from None
    if not any(_members(data, "all")):
        why = f": {one_line(warnings[0])}" if warnings else ""
        raise InventoryError(f"inventory {path} names no hosts{why}")
    return data


def _members(data: dict[str, Any], group: str, seen: frozenset = frozenset()) -> list[str]:
    if group in seen:
        return []
    node = data.get(group, {})
    out = list(node.get("hosts", []))
    for child in node.get("children", []):
        out += _members(data, child, seen | {group})
    return out


def _hosts(data: dict[str, Any]) -> list[dict[str, Any]]:
    hostvars = data.get("_meta", {}).get("hostvars", {})
    roles: dict[str, set[str]] = {}
    for group in data:
        if group == "_meta":
            continue
        for name in _members(data, group):
            roles.setdefault(name, set())
            if group not in _IGNORED_GROUPS:
                roles[name].add(group)
    hosts = []
    for name in sorted(roles):
        v = hostvars.get(name, {})
        host: dict[str, Any] = {"name": name, "address": str(v.get("ansible_host", name)), "backend": "ansible",
                                "roles": sorted(roles[name])}
        if v.get("ansible_port") is not None:
            host["port"] = int(v["ansible_port"])
        if v.get("ansible_user"):
            host["user"] = str(v["ansible_user"])
        key = v.get("ansible_ssh_private_key_file") or v.get("ansible_private_key_file")
        if key:
            host["identity_file"] = str(key)
        if isinstance(v.get("acgs_mounts"), list):
            host["mounts"] = [str(m) for m in v["acgs_mounts"]]
        hosts.append(host)
    return hosts
