"""The ASGI app behind each sandbox service: health, probes, metrics, simulated API traffic, logs, faults.

Run one service per process, as the sandbox does:

    python -m uvicorn --factory acgs_verify.sandbox.service_app:constitutional_ai --port 18002

Raw ASGI and only the standard library, because six of these start on every `sandbox up` and start-up
time is what the user waits for. The sandbox directory comes from $ACGS_SANDBOX_DIR; active faults come
from DIR/faults.json, re-read whenever that file is replaced.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from acgs_verify.sandbox.constants import CONSTITUTIONAL_HASH, LOG_DIR

WRONG_HASH = "0badc0ffee15bad0"  # what `wrong-hash` serves instead
OTHER_LOG_HASH = "3f2a9c1b7e4d6a05"  # what `log-hash-mismatch` writes to the log
VERSION = "4.0.0"
SLOW_SECONDS = 0.15
DELAY_HEADER = "x-sandbox-delay-ms"  # on a reply `slow` delayed: the milliseconds it waited, so a test reads a fact
FAULTS_FILE = "faults.json"
MEMORY_FAULT_BYTES = 256 << 20  # service-memory: far above a healthy service's ~40 MB RSS
LOG_SUBDIR = LOG_DIR
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MAX_ENDPOINT_LABELS = 200  # /api/v1/<anything> must not grow the metrics without bound


@dataclass(frozen=True)
class ServiceSpec:
    """What differs between the six services, mirroring the public ACGS code."""

    name: str
    port: int  # production port; the sandbox adds its offset
    log_format: Literal["plain", "json"]
    probes: bool  # has /health/ready and /health/live
    metrics: bool  # has /metrics
    extra: dict[str, dict[str, str]] = field(default_factory=dict)  # "components" or "dependencies"

    @property
    def service_field(self) -> str:
        return self.name.replace("-", "_") + "_service"

    @property
    def factory(self) -> str:
        return self.name.replace("-", "_")


SERVICES: dict[str, ServiceSpec] = {
    s.name: s
    for s in (
        ServiceSpec("auth", 8016, "plain", True, True,
                    {"components": {"jwt": "healthy", "database": "healthy", "redis": "healthy"}}),
        ServiceSpec("constitutional-ai", 8002, "plain", True, True,
                    {"components": {"constitutional_validator": "healthy", "principle_engine": "healthy"}}),
        ServiceSpec("policy-governance", 8003, "json", True, True,
                    {"dependencies": {"opa": "healthy", "constitutional_ai": "healthy"}}),
        ServiceSpec("governance-synthesis", 8004, "plain", False, False),
        ServiceSpec("formal-verification", 8005, "json", True, True,
                    {"dependencies": {"z3_solver": "healthy", "constitutional_ai": "healthy"}}),
        ServiceSpec("evolutionary-computation", 8010, "plain", False, False),
    )
}


def log_path(sandbox_dir: Path, spec: ServiceSpec) -> Path:
    return sandbox_dir / LOG_SUBDIR / f"{spec.service_field}.log"


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ------------------------------------------------------------------------------------------- logging


class _JsonFormatter(logging.Formatter):
    """One JSON object per line, like the structlog-based ACGS services."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "timestamp": dt.datetime.fromtimestamp(record.created, dt.UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        return json.dumps(line)


def _make_logger(spec: ServiceSpec, path: Path) -> logging.Logger:
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(spec.service_field)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # uvicorn's handlers must not copy our lines to stderr
    for h in list(logger.handlers):
        logger.removeHandler(h)
    handler = logging.FileHandler(path, encoding="utf-8")
    if spec.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
    logger.addHandler(handler)
    return logger


# ------------------------------------------------------------------------------------------- metrics


class _Metrics:
    """Counters and a histogram of the requests this process really served (Prometheus text 0.0.4)."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}
        self.durations: dict[tuple[str, str], list[float]] = {}  # bucket counts, then sum, then count
        self.endpoints: set[str] = set()

    def observe(self, method: str, endpoint: str, status: int, seconds: float) -> None:
        if endpoint not in self.endpoints:
            if len(self.endpoints) >= MAX_ENDPOINT_LABELS:
                endpoint = "other"
            self.endpoints.add(endpoint)
        key = (method, endpoint, str(status))
        self.requests[key] = self.requests.get(key, 0) + 1
        h = self.durations.setdefault((method, endpoint), [0.0] * (len(DURATION_BUCKETS) + 2))
        for i, le in enumerate(DURATION_BUCKETS):
            if seconds <= le:
                h[i] += 1
        h[-2] += seconds
        h[-1] += 1

    def render(self) -> str:
        out = [
            "# HELP acgs_http_requests_total Total HTTP requests",
            "# TYPE acgs_http_requests_total counter",
        ]
        for (m, e, s), n in sorted(self.requests.items()):
            out.append(f'acgs_http_requests_total{{method="{m}",endpoint="{_esc(e)}",status="{s}"}} {n}')
        out += [
            "# HELP acgs_http_request_duration_seconds HTTP request duration in seconds",
            "# TYPE acgs_http_request_duration_seconds histogram",
        ]
        for (m, e), h in sorted(self.durations.items()):
            labels = f'method="{m}",endpoint="{_esc(e)}"'
            for le, n in zip(DURATION_BUCKETS, h, strict=False):
                out.append(f'acgs_http_request_duration_seconds_bucket{{{labels},le="{le}"}} {int(n)}')
            out.append(f'acgs_http_request_duration_seconds_bucket{{{labels},le="+Inf"}} {int(h[-1])}')
            out.append(f"acgs_http_request_duration_seconds_sum{{{labels}}} {h[-2]:.6f}")
            out.append(f"acgs_http_request_duration_seconds_count{{{labels}}} {int(h[-1])}")
        out += [
            "# HELP acgs_constitutional_compliance Constitutional compliance rate of recent decisions",
            "# TYPE acgs_constitutional_compliance gauge",
            "acgs_constitutional_compliance 0.998",
        ]
        return "\n".join(out) + "\n"


def _esc(label: str) -> str:
    return label.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


# -------------------------------------------------------------------------------------------- faults


class _FaultFile:
    """This service's active faults. One stat per request; the sandbox replaces the file atomically,
    so a new inode or mtime means new content."""

    def __init__(self, path: Path, service: str) -> None:
        self.path = path
        self.service = service
        self._sig: tuple[int, int] | None = None
        self.active: frozenset[str] = frozenset()

    def refresh(self) -> frozenset[str]:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._sig, self.active = None, frozenset()
            return self.active
        sig = (st.st_ino, st.st_mtime_ns)
        if sig != self._sig:
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
                self.active = frozenset(data.get(self.service, []))
                self._sig = sig
            except (OSError, ValueError):
                pass  # half-visible write: keep the last good view and look again next request
        return self.active


# ----------------------------------------------------------------------------------------------- app

Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]


class ServiceApp:
    """One ACGS-like service as a raw ASGI application."""

    def __init__(self, spec: ServiceSpec, sandbox_dir: Path) -> None:
        self.spec = spec
        self.started = time.monotonic()
        self.metrics = _Metrics()
        self.faults = _FaultFile(sandbox_dir / FAULTS_FILE, spec.name)
        self.log = _make_logger(spec, log_path(sandbox_dir, spec))
        self._mismatch_logged = False
        self._ballast: bytes | None = None  # the service-memory fault's allocation

    # -- logging helpers
    def _info(self, message: str, level: int = logging.INFO, **fields: Any) -> None:
        self.log.log(level, message, extra={"fields": fields})

    def _startup_lines(self) -> None:
        s = self.spec
        faults = self.faults.refresh()
        self._info(f"Starting {s.service_field} version {VERSION}", service=s.service_field, version=VERSION)
        if "log-no-banner" not in faults:
            self._info(f"{s.service_field} initialized - Constitutional Hash: {CONSTITUTIONAL_HASH}",
                       constitutional_hash=CONSTITUTIONAL_HASH)
        for kind, parts in s.extra.items():
            self._info(f"{kind.capitalize()} ready: {', '.join(parts)}")
        self._info("Application startup complete")
        self._note_faults(faults)

    def _note_faults(self, faults: frozenset[str]) -> None:
        # A service evaluating policies under another constitution says so once when it starts doing so.
        if "log-hash-mismatch" in faults and not self._mismatch_logged:
            self._log_mismatch()
        self._mismatch_logged = "log-hash-mismatch" in faults
        # service-memory: a cache that grew (or a leak) holds MEMORY_FAULT_BYTES, every page written so it counts
        # in RSS, until the fault is healed
        if ("service-memory" in faults) != (self._ballast is not None):
            self._ballast = b"\x01" * MEMORY_FAULT_BYTES if "service-memory" in faults else None

    def _log_mismatch(self) -> None:
        self._info(f"Policy evaluated under Constitutional Hash: {OTHER_LOG_HASH}", logging.WARNING,
                   constitutional_hash=OTHER_LOG_HASH)

    # -- ASGI
    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                self._startup_lines()
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                self._info(f"Shutting down {self.spec.service_field}")
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        while (await receive()).get("more_body"):
            pass  # drain the request body; nothing here reads it
        faults = self.faults.refresh()
        self._note_faults(faults)
        delayed = "slow" in faults
        if delayed:
            await asyncio.sleep(SLOW_SECONDS)
        method, path = scope["method"], scope["path"]
        status, body, ctype = self._route(method, path, faults)
        hash_header = WRONG_HASH if "wrong-hash" in faults else CONSTITUTIONAL_HASH
        # logged and counted before the body goes out: a client that has its answer can rely on the log line and
        # the metric being there (the sandbox's own seeding and the tests read them straight after)
        seconds = time.perf_counter() - t0
        ms = round(seconds * 1000, 2)
        level = logging.ERROR if status >= 500 else logging.INFO
        self._info(f"request method={method} path={path} status={status} duration_ms={ms}", level,
                   method=method, path=path, status=status, duration_ms=ms)
        self.metrics.observe(method, path, status, seconds)
        await send({
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", ctype.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"x-constitutional-hash", hash_header.encode()),
                *([(DELAY_HEADER.encode(), str(round(SLOW_SECONDS * 1000)).encode())] if delayed else []),
            ],
        })
        await send({"type": "http.response.body", "body": body})

    def _metrics_reply(self, faults: frozenset[str]) -> tuple[int, bytes, str]:
        """Prometheus text; or, as seen on real deployments, a JSON object of counters (`metrics-json`) or the
        Prometheus text returned from a FastAPI route as a str, hence JSON-encoded (`metrics-json-string`)."""
        text = self.metrics.render()
        if "metrics-json" in faults:
            total = sum(self.metrics.requests.values())
            return _json(200, {"service": self.spec.service_field, "requests_total": total,
                               "uptime_seconds": round(time.monotonic() - self.started, 3),
                               "constitutional_hash": CONSTITUTIONAL_HASH})
        if "metrics-json-string" in faults:
            return _json(200, text)
        return 200, text.encode(), "text/plain; version=0.0.4; charset=utf-8"

    def _route(self, method: str, path: str, faults: frozenset[str]) -> tuple[int, bytes, str]:
        s = self.spec
        the_hash = WRONG_HASH if "wrong-hash" in faults else CONSTITUTIONAL_HASH
        if path == "/health":
            unhealthy = "service-unhealthy" in faults
            body: dict[str, Any] = {
                "status": "unhealthy" if unhealthy else "healthy",
                "service": s.service_field,
                "version": VERSION,
                "timestamp": _now_iso(),
                "constitutional_hash": the_hash,
                "uptime_seconds": round(time.monotonic() - self.started, 3),
                **s.extra,
            }
            return _json(503 if unhealthy else 200, body)
        if s.probes and path == "/health/ready":
            return _json(200, {"ready": True, "service": s.service_field, "constitutional_hash": the_hash})
        if s.probes and path == "/health/live":
            return _json(200, {"alive": True})
        if s.metrics and path == "/metrics":
            return self._metrics_reply(faults)
        if path.startswith("/api/v1/"):
            if "errors" in faults:
                return _json(500, {"error": "internal_error", "detail": "simulated failure", "path": path})
            if "log-hash-mismatch" in faults:
                self._log_mismatch()
            return _json(200, {"service": s.service_field, "path": path, "method": method, "result": "ok",
                               "constitutional_hash": the_hash, "compliant": True})
        return _json(404, {"error": "not_found", "path": path})


def _json(status: int, body: Any) -> tuple[int, bytes, str]:
    return status, json.dumps(body).encode(), "application/json"


# --------------------------------------------------------------------------------------- factories


def create_app(service: str) -> ServiceApp:
    """Build the app for one service; the sandbox directory comes from $ACGS_SANDBOX_DIR."""
    base = os.environ.get("ACGS_SANDBOX_DIR")
    if not base:
        raise RuntimeError("ACGS_SANDBOX_DIR is not set; start services with `acgs-verify sandbox up`")
    return ServiceApp(SERVICES[service], Path(base))


_FACTORIES = {spec.factory: spec.name for spec in SERVICES.values()}


def __getattr__(name: str) -> Callable[[], ServiceApp]:
    # PEP 562: `service_app:constitutional_ai` names a factory without six copies of the same function.
    if name in _FACTORIES:
        service = _FACTORIES[name]
        return lambda: create_app(service)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
