"""The sandbox: a local ACGS-like stack under one directory, with faults that can be switched on.

>>> sb = Sandbox(Path(".sandbox"))
>>> profile = sb.up()              # .sandbox/profile.yaml, ready for `acgs-verify run --profile`
>>> sb.break_fault("slow:auth"); sb.heal_fault("slow:auth")
>>> sb.down()

All state lives under the directory (state.json, run/*.pid, logs, faults.json), so separate CLI
invocations and several sandboxes side by side (different dirs and port offsets) just work.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from acgs_verify.sandbox.components.apptree import AppTree
from acgs_verify.sandbox.components.backups import Backups
from acgs_verify.sandbox.components.base import Component, Context, SandboxError, atomic_write
from acgs_verify.sandbox.components.policies import Policies
from acgs_verify.sandbox.components.postgres import Postgres
from acgs_verify.sandbox.components.redis import Redis
from acgs_verify.sandbox.components.services import Services
from acgs_verify.sandbox.components.sshd import Sshd
from acgs_verify.sandbox.components.tls import Tls
from acgs_verify.sandbox.constants import CONSTITUTIONAL_HASH, secret_path
from acgs_verify.sandbox.service_app import SERVICES

STATE_VERSION = 1
HIGHEST_PORT = max(s.port for s in SERVICES.values())
# The sandbox's host is the machine it runs on: a laptop or a shared runner whose CPU and load belong to
# everything else on it (a build, a browser, other sandboxes). SYS-01/SYS-02 measure and report them there;
# they fail only on a machine this loaded (a load of 64, every CPU busy). Tests that need those two to fail
# lower them with --set (tests/test_run_hosts.py). The sandbox's Redis shares those cores too: a PING's p99 of
# 5-8 ms there is the machine, not the cache (redis-slow holds the server 200 ms at a time: it trips 25 ms).
# The sandbox's own statements take milliseconds: a statement active for 2 s is the db-long-query fault, which
# a run straight after `sandbox break db-long-query` then shows (production's 300 s would hide it for 5 minutes).
# A health p99 of 5-9 ms (SVC-06's target is 5) or a connect p99 of 3 ms (SYS-06's is 2) there is the machine too:
# the 50 ms noise floor keeps a quiet machine's runs free of warnings (`slow` adds 150 ms: it still fails SVC-06).
SHARED_MACHINE_THRESHOLDS = {"load_1m_max": 64, "cpu_percent_max": 100, "redis_latency_p99_ms_max": 25,
                             "db_long_query_seconds": 2, "latency_noise_floor_ms": 50}


def default_components() -> list[Component]:
    # the app tree before policies (they live in it); backups last: they dump the database and archive
    # the logs, the app tree and the policies the others wrote
    return [Services(), Postgres(), Redis(), AppTree(), Sshd(), Policies(), Tls(), Backups()]


def fault_names(components: Sequence[Component] | None = None) -> list[str]:
    return [f for c in (components or default_components()) for f in c.fault_names]


FAULTS: tuple[str, ...] = tuple(fault_names())


def running_profile(dir: Path) -> tuple[Path | None, str]:
    """(the profile of the sandbox running in `dir`, "") or (None, why there is none): what `acgs-verify run`
    uses when no --profile is given. Running means `up` finished, its profile.yaml is there and at least one of
    its processes (verified by pid, as `sandbox status` does) is alive.

    >>> running_profile(Path(".sandbox"))
    (PosixPath('/home/me/acgs-verify/.sandbox/profile.yaml'), '')
    """
    sb = Sandbox(dir)
    if not sb._state_path.exists():
        return None, f"no sandbox in {sb.dir}"
    try:
        if not sb._load()["up"]:
            return None, f"the sandbox in {sb.dir} is down"
        status = sb.status()
    except SandboxError as exc:
        return None, str(exc)
    if not any(p.get("state") == "running" for procs in status["components"].values() for p in procs):
        return None, f"the sandbox in {sb.dir} is recorded as up but none of its processes runs"
    if not sb.profile_path.is_file():
        return None, f"the sandbox in {sb.dir} has no profile.yaml"
    return sb.profile_path, ""


class Sandbox:
    def __init__(self, dir: Path = Path(".sandbox"), port_offset: int = 10000,
                 components: Sequence[Component] | None = None) -> None:
        self.dir = Path(dir).expanduser().resolve()  # services and the profile need absolute paths
        self.port_offset = port_offset
        self.components = list(components) if components is not None else default_components()
        self.profile_path = self.dir / "profile.yaml"
        self._state_path = self.dir / "state.json"

    # ------------------------------------------------------------------------------------- public
    def up(self) -> Path:
        """Start every component and write DIR/profile.yaml; if already up, change nothing."""
        if not 0 <= self.port_offset <= 65535 - HIGHEST_PORT:
            raise SandboxError(f"port offset {self.port_offset} out of range 0..{65535 - HIGHEST_PORT}")
        with self._locked():
            state = self._load()
            if state["up"]:
                if not self.profile_path.exists():
                    self._write_profile(state)
                return self.profile_path
            self._down_components(state)  # leftovers of an interrupted up, stopped by verified pid
            state = self._fresh_state()
            self._save(state)
            started: list[Component] = []
            try:
                for comp in self.components:
                    started.append(comp)
                    comp.up(self._ctx(comp, state))
            except BaseException:
                for comp in reversed(started):
                    comp.down(self._ctx(comp, state))
                raise
            state["up"] = True
            self._save(state)
            self._write_profile(state)
        return self.profile_path

    def down(self) -> list[str]:
        """Stop exactly what up started and clear all faults; returns one line per process stopped."""
        if not self._state_path.exists():
            return []
        with self._locked():
            state = self._load()
            stopped = self._down_components(state)
            state["up"] = False
            self._save(state)
        return stopped

    def status(self) -> dict[str, Any]:
        state = self._load()
        return {
            "up": state["up"],
            "dir": str(self.dir),
            "port_offset": state["port_offset"],
            "profile": str(self.profile_path) if state["up"] else None,
            "faults": self._active_faults(state),
            "components": {c.name: c.status(self._ctx(c, state)) for c in self.components},
        }

    def secret_file(self, name: str) -> Path:
        """Where a secret lives, e.g. sb.secret_file("db") -> DIR/secrets/db.password (names: SECRET_FILES)."""
        return secret_path(self.dir, name)

    def secret(self, name: str) -> str:
        """A password the sandbox made, e.g. sb.secret("pg-admin") (names: constants.SECRET_FILES)."""
        path = self.secret_file(name)
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise SandboxError(f"cannot read the sandbox secret {name!r} ({path}): {exc.strerror}") from None

    def faults(self) -> list[str]:
        return self._active_faults(self._load())

    def break_fault(self, spec: str) -> None:
        self._fault(spec, heal=False)

    def heal_fault(self, spec: str) -> None:
        self._fault(spec, heal=True)

    def valid_faults(self) -> list[str]:
        """Every spec break/heal accept, e.g. 'slow:auth'."""
        return [f"{f}:{t}" if t else f for c in self.components for f in c.fault_names
                for t in (c.fault_targets(f) or [""])]

    def fault_help(self, spec: str) -> str:
        """One line on what a fault does and which checks then fail: fault_help("slow:auth") -> 'every request
        waits 150 ms (SVC-06 fails)'."""
        fault = spec.split(":", 1)[0]
        return next((c.fault_help.get(fault, "") for c in self.components if fault in c.fault_names), "")

    def heal_all(self) -> list[str]:
        """Heal every active fault; returns the specs healed. A heal that fails leaves its fault listed (and the
        others healed), then raises one SandboxError naming each that failed."""
        healed, failed = [], []
        for spec in self.faults():
            try:
                self.heal_fault(spec)
                healed.append(spec)
            except SandboxError as exc:
                failed.append(f"{spec}: {exc}")
        if failed:
            raise SandboxError(f"could not heal {len(failed)} of {len(failed) + len(healed)} faults (healed: "
                               f"{', '.join(healed) or 'none'}): {'; '.join(failed)}")
        return healed

    # ------------------------------------------------------------------------------------ helpers
    def _fault(self, spec: str, heal: bool) -> None:
        comp, fault, target = self._parse(spec)
        with self._locked():
            state = self._load()
            if not state["up"]:
                raise SandboxError(f"sandbox in {self.dir} is not up; run `acgs-verify sandbox up` first")
            ctx = self._ctx(comp, state)
            (comp.heal_fault if heal else comp.break_fault)(ctx, fault, target)

    def _parse(self, spec: str) -> tuple[Component, str, str]:
        fault, _, target = spec.strip().partition(":")
        comp = next((c for c in self.components if fault in c.fault_names), None)
        if comp is None:
            valid = ", ".join(fault_names(self.components))
            raise SandboxError(f"unknown fault {fault!r} in {spec!r}; valid: {valid}"
                               " (`acgs-verify sandbox faults` lists each with its targets)")
        targets = comp.fault_targets(fault)
        if targets and target not in targets:
            noun = "service" if targets == comp.targets() else "target"
            what = f"unknown {noun} {target!r}" if target else f"no {noun} named"
            raise SandboxError(f"{what} in {spec!r}; valid {noun}s: {', '.join(targets)}")
        return comp, fault, target

    def _active_faults(self, state: dict[str, Any]) -> list[str]:
        return [f for c in self.components for f in c.active_faults(self._ctx(c, state))]

    def _down_components(self, state: dict[str, Any]) -> list[str]:
        stopped: list[str] = []
        for comp in reversed(self.components):
            stopped += comp.down(self._ctx(comp, state))
        return stopped

    def _ctx(self, comp: Component, state: dict[str, Any]) -> Context:
        slice_ = state["components"].setdefault(comp.name, {})
        return Context(self.dir, int(state["port_offset"]), state["python"], slice_,
                       lambda: self._save(state))

    def _fresh_state(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "up": False,
            "port_offset": self.port_offset,
            "python": sys.executable,
            "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "components": {},
        }

    def _load(self) -> dict[str, Any]:
        try:
            state = json.loads(self._state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return self._fresh_state()
        except (OSError, ValueError) as exc:
            raise SandboxError(f"{self._state_path}: unreadable sandbox state ({exc}); remove the directory "
                               "after stopping its processes") from None
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise SandboxError(f"{self._state_path}: not a sandbox state file of version {STATE_VERSION}")
        return state

    def _save(self, state: dict[str, Any]) -> None:
        atomic_write(self._state_path, json.dumps(state, indent=1) + "\n")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # two `acgs-verify sandbox` commands at once must not interleave starts and stops
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def profile_data(self) -> dict[str, Any]:
        """The profile `up` writes, as data (for this directory and port offset)."""
        return self._profile(self._load())

    def _write_profile(self, state: dict[str, Any]) -> None:
        text = yaml.safe_dump(self._profile(state), sort_keys=False, default_flow_style=False)
        atomic_write(self.profile_path, text)

    def _profile(self, state: dict[str, Any]) -> dict[str, Any]:
        profile: dict[str, Any] = {
            "name": "sandbox",
            "description": "local ACGS-like sandbox (acgs-verify sandbox up)",
            "constitutional_hash": CONSTITUTIONAL_HASH,
            "hosts": [{"name": "app-1", "address": "127.0.0.1", "backend": "local",
                       "roles": ["app", "db", "cache"]}],
            "thresholds": dict(SHARED_MACHINE_THRESHOLDS),
        }
        for comp in self.components:
            for key, value in comp.profile_fragment(self._ctx(comp, state)).items():
                if isinstance(value, list):
                    profile[key] = profile.get(key, []) + value
                elif isinstance(value, dict):
                    profile[key] = {**profile.get(key, {}), **value}
                else:
                    profile[key] = value
        return profile
