"""The six ACGS HTTP services, one uvicorn process each, and their faults.

State slice: {"processes": {name: spawn record}, "faults": {name: [fault, ...]}, "decoys": {name: spawn record}}.
The running services learn their faults from DIR/faults.json (same shape as "faults"), which this module rewrites on
every change.

`service-down-decoy:NAME` is the field's false negative: the service is stopped while another process, listening
nowhere, carries a command line that any pattern for the service matches (`... uvicorn --factory
acgs_verify.sandbox.service_app:auth --port 18016`, so `uvicorn.*auth` too). Only the port's owner tells them apart.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx

from acgs_verify.sandbox import service_app
from acgs_verify.sandbox.components.base import (
    Component,
    Context,
    SandboxError,
    atomic_write,
    claim_port,
    is_alive,
    python_env,
    start,
    stop,
    tail,
    wait_until,
)
from acgs_verify.sandbox.constants import READY_TIMEOUT, RUN_DIR
from acgs_verify.sandbox.service_app import SERVICES, ServiceSpec

SEED_REQUESTS = 40
SEED_PATHS = ("/api/v1/policies", "/api/v1/principles", "/api/v1/decisions", "/api/v1/evaluate",
              "/api/v1/status")

# the service whose /metrics the sandbox profile names as a source of the compliance rate (CC-04)
COMPLIANCE_SERVICE = "constitutional-ai"

# faults whose heal (and for log-no-banner also break) needs a fresh log and a fresh process
_RESTART_ON_HEAL = ("errors", "log-hash-mismatch", "log-no-banner", "process-gone")
_DOWN = ("service-down", "service-down-decoy")  # faults that keep the service stopped


def process_pattern(spec: ServiceSpec, port: int) -> str:
    """The regex checks use to find this service's process; the command line below must keep matching.
    It names the port: several sandboxes (other port offsets) may run the same services on one machine."""
    return rf"uvicorn .*acgs_verify\.sandbox\.service_app:{spec.factory} .*--port {port}( |$)"


class Services(Component):
    name = "services"
    fault_names = ("service-down", "service-unhealthy", "wrong-hash", "slow", "errors",
                   "log-hash-mismatch", "log-no-banner", "process-gone", "service-down-decoy", "metrics-json",
                   "metrics-json-string", "service-memory")
    fault_help = {
        "service-down": "stops the service: SVC-01..04 and the checks that read its answers fail",
        "service-unhealthy": "/health answers 503 with status unhealthy (SVC-01, SVC-02)",
        "wrong-hash": "the service answers with another constitutional hash (SVC-02, SVC-08)",
        "slow": "every request waits 150 ms (SVC-06 fails)",
        "errors": "the service logs 5xx request lines (SVC-07)",
        "log-hash-mismatch": "the service log names another constitutional hash (CC-02)",
        "log-no-banner": "the service log loses the line naming the hash (CC-01)",
        "process-gone": "the port's owner no longer matches the profile's process pattern (SVC-03)",
        "service-down-decoy": "stops the service and starts a process whose command line matches its pattern "
                              "but owns no port: only the port's owner tells them apart (SVC-01..04)",
        "metrics-json": "/metrics answers a JSON object instead of Prometheus text (SVC-10)",
        "metrics-json-string": "/metrics answers Prometheus text inside a JSON string (SVC-10)",
        "service-memory": "the service holds a large allocation (SVC-11 with a lower service_rss_mb_max)",
    }

    def targets(self) -> list[str]:
        return list(SERVICES)

    def fault_targets(self, fault: str) -> list[str]:
        # /metrics answering JSON: only the services that have a /metrics
        if fault.startswith("metrics-json"):
            return [name for name, spec in SERVICES.items() if spec.metrics]
        return self.targets()

    # ---------------------------------------------------------------------------------- lifecycle
    def up(self, ctx: Context) -> None:
        ctx.state.setdefault("processes", {})
        ctx.state.setdefault("faults", {})
        ports = {name: self._port(ctx, spec) for name, spec in SERVICES.items()}
        for name, port in ports.items():
            claim_port(port, name, ctx.port_offset)
        self._write_fault_file(ctx)
        with self.undone_on_failure(ctx):
            # start all six before waiting for any: they boot in parallel
            for spec in SERVICES.values():
                self._spawn(ctx, spec)
            deadline = time.monotonic() + READY_TIMEOUT  # one budget for the six: they boot side by side
            for spec in SERVICES.values():
                self._wait_ready(ctx, spec, max(0.0, deadline - time.monotonic()))
        for spec in SERVICES.values():
            self._seed(ctx, spec)

    def down(self, ctx: Context) -> list[str]:
        stopped: list[str] = []
        for name, record in sorted(ctx.state.get("processes", {}).items()):
            if stop(record):
                stopped.append(f"{name} (pid {record['pid']})")
            self._pid_file(ctx, name).unlink(missing_ok=True)
        for name, record in sorted(ctx.state.get("decoys", {}).items()):
            if stop(record):
                stopped.append(f"{name} decoy (pid {record['pid']})")
        ctx.state["processes"] = {}
        ctx.state["decoys"] = {}
        self.clear_faults(ctx)
        (ctx.dir / service_app.FAULTS_FILE).unlink(missing_ok=True)
        return stopped

    def status(self, ctx: Context) -> list[dict[str, Any]]:
        out = []
        for name, spec in SERVICES.items():
            record = ctx.state.get("processes", {}).get(name)
            faults = self._faults(ctx, name)
            if set(_DOWN) & set(faults):
                out.append(self.row(ctx, name, "down (fault)", None, self._port(ctx, spec), faults))
                continue
            out.append({**self.process_row(ctx, name, record, self._port(ctx, spec), dead="crashed"),
                        "faults": faults})
        return out

    def profile_fragment(self, ctx: Context) -> dict[str, Any]:
        services = []
        for spec in SERVICES.values():
            entry: dict[str, Any] = {"name": spec.name, "port": self._port(ctx, spec),
                                     "health_path": "/health"}
            if spec.probes:
                entry.update(ready_path="/health/ready", live_path="/health/live")
            if spec.metrics:
                entry["metrics_path"] = "/metrics"
            if spec.name == COMPLIANCE_SERVICE:
                entry["compliance_metric"] = "acgs_constitutional_compliance"
            entry.update(
                process=process_pattern(spec, self._port(ctx, spec)),
                unit=f"acgs-{spec.name}-service",
                log=str(service_app.log_path(ctx.dir, spec)),
            )
            services.append(entry)
        return {"services": services, "paths": {"logs": str(ctx.dir / service_app.LOG_SUBDIR)}}

    # ------------------------------------------------------------------------------------- faults
    # The state keeps them per service ({name: [fault, ...]}), the shape of DIR/faults.json that the services read;
    # a service (re)started by break or heal must find its faults there already.
    list_first = True

    def active_faults(self, ctx: Context) -> list[str]:
        return [f"{f}:{name}" for name in SERVICES for f in self._faults(ctx, name)]

    def list_fault(self, ctx: Context, spec: str, on: bool) -> None:
        fault, _, name = spec.partition(":")
        faults = ctx.state.setdefault("faults", {}).setdefault(name, [])
        if on:
            faults.append(fault)
        elif fault in faults:
            faults.remove(fault)
        ctx.save()
        self._write_fault_file(ctx)

    def clear_faults(self, ctx: Context) -> None:
        ctx.state["faults"] = {}
        ctx.save()

    def break_(self, ctx: Context, fault: str, target: str) -> None:
        spec = SERVICES[target]
        if fault in _DOWN:
            self._stop(ctx, spec)
            if fault == "service-down-decoy":
                self._start_decoy(ctx, spec)
        elif fault == "errors":
            self._seed(ctx, spec)  # the log's recent lines and the metrics now show the 500s
        elif fault == "log-hash-mismatch":
            self._seed(ctx, spec, 5)  # the service notices on its next request and logs the other hash
        elif fault in ("log-no-banner", "process-gone"):
            self._restart(ctx, spec)
        elif fault == "service-memory":
            self._seed(ctx, spec, 1)  # the service allocates on its next request: now, before any run

    def heal(self, ctx: Context, fault: str, target: str) -> None:
        spec = SERVICES[target]
        if fault == "service-down-decoy":
            stop(ctx.state.setdefault("decoys", {}).pop(spec.name, None))
            ctx.save()
        if fault in _DOWN:
            if not set(_DOWN) & set(self._faults(ctx, spec.name)):
                self._start(ctx, spec)
        elif fault in _RESTART_ON_HEAL:
            self._restart(ctx, spec)
        elif fault == "service-memory":
            self._seed(ctx, spec, 1)  # and frees the allocation on its next request

    # ------------------------------------------------------------------------------------ helpers
    def _faults(self, ctx: Context, name: str) -> list[str]:
        return list(ctx.state.get("faults", {}).get(name, []))

    def _port(self, ctx: Context, spec: ServiceSpec) -> int:
        return spec.port + ctx.port_offset

    def _pid_file(self, ctx: Context, name: str) -> Path:
        return ctx.dir / RUN_DIR / f"{name}.pid"

    def _write_fault_file(self, ctx: Context) -> None:
        atomic_write(ctx.dir / service_app.FAULTS_FILE, json.dumps(ctx.state.get("faults", {}), indent=1))

    def _argv(self, ctx: Context, spec: ServiceSpec) -> list[str]:
        if "process-gone" in self._faults(ctx, spec.name):
            # the same server on the same port, under a command line process_pattern() no longer matches
            launcher = ["-c", "import sys, uvicorn.main; sys.argv[0] = 'acgs-renamed'; uvicorn.main.main()"]
        else:
            launcher = ["-m", "uvicorn"]
        return [ctx.python, *launcher, "--factory", f"acgs_verify.sandbox.service_app:{spec.factory}",
                "--host", "127.0.0.1", "--port", str(self._port(ctx, spec)),
                "--log-level", "warning", "--no-access-log"]

    def _spawn(self, ctx: Context, spec: ServiceSpec) -> None:
        record = start(spec.name, self._argv(ctx, spec), python_env(ctx), ctx.dir / RUN_DIR, spec.name)
        ctx.state.setdefault("processes", {})[spec.name] = record
        ctx.save()
        atomic_write(self._pid_file(ctx, spec.name), f"{record['pid']}\n")

    def _wait_ready(self, ctx: Context, spec: ServiceSpec, timeout: float) -> None:
        record = ctx.state["processes"][spec.name]
        url = f"http://127.0.0.1:{self._port(ctx, spec)}/health"
        err = ctx.dir / RUN_DIR / f"{spec.name}.err"
        # an unhealthy-by-fault service answers 503 on purpose; it is still up
        ok = (200, 503) if "service-unhealthy" in self._faults(ctx, spec.name) else (200,)
        last = ["no answer"]

        def healthy() -> bool:
            if not is_alive(record):
                raise SandboxError(f"{spec.name} exited during start-up: {tail(err)}")
            try:
                r = client.get(url)
            except httpx.HTTPError as exc:
                last[0] = type(exc).__name__
                return False
            last[0] = f"HTTP {r.status_code}"
            return r.status_code in ok

        with httpx.Client(timeout=1.0) as client:
            wait_until(lambda: f"{spec.name} not healthy on {url} after {READY_TIMEOUT:.0f} s ({last[0]}); "
                               f"stderr: {tail(err)}", healthy, timeout)

    def _seed(self, ctx: Context, spec: ServiceSpec, n: int = SEED_REQUESTS) -> None:
        """Real user traffic, so logs and metrics hold real request lines."""
        if set(_DOWN) & set(self._faults(ctx, spec.name)):
            return
        base = f"http://127.0.0.1:{self._port(ctx, spec)}"
        try:
            with httpx.Client(base_url=base, timeout=5.0) as client:
                for i in range(n):
                    client.get(SEED_PATHS[i % len(SEED_PATHS)])
        except httpx.HTTPError as exc:
            raise SandboxError(f"{spec.name} stopped answering on {base}: {type(exc).__name__}") from None

    def _start(self, ctx: Context, spec: ServiceSpec) -> None:
        claim_port(self._port(ctx, spec), spec.name, ctx.port_offset)
        self._spawn(ctx, spec)
        self._wait_ready(ctx, spec, READY_TIMEOUT)
        self._seed(ctx, spec)

    def _stop(self, ctx: Context, spec: ServiceSpec) -> None:
        stop(ctx.state.get("processes", {}).get(spec.name))
        ctx.state.setdefault("processes", {})[spec.name] = None
        ctx.save()
        self._pid_file(ctx, spec.name).unlink(missing_ok=True)

    def _restart(self, ctx: Context, spec: ServiceSpec) -> None:
        """Stop, move the log aside (to LOG.1), start with a fresh log and metrics, re-seed."""
        self._stop(ctx, spec)
        log = service_app.log_path(ctx.dir, spec)
        if log.exists():
            os.replace(log, log.with_name(log.name + ".1"))
        if not set(_DOWN) & set(self._faults(ctx, spec.name)):
            self._start(ctx, spec)

    def _start_decoy(self, ctx: Context, spec: ServiceSpec) -> None:
        """A sleeper whose command line reads like the service's (python -c SLEEP uvicorn --factory ...:auth --port
        18016): it matches the profile's pattern and a loose one alike, and owns no socket."""
        argv = [ctx.python, "-c", "import time; time.sleep(10**9)  # acgs-sandbox decoy", "uvicorn", "--factory",
                f"acgs_verify.sandbox.service_app:{spec.factory}", "--host", "127.0.0.1",
                "--port", str(self._port(ctx, spec))]
        record = start(f"the {spec.name} decoy", argv, python_env(ctx), ctx.dir / RUN_DIR, f"{spec.name}-decoy")
        ctx.state.setdefault("decoys", {})[spec.name] = record
        ctx.save()



