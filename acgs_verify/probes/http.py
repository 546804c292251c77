"""HTTP probes: one GET with a hard deadline and a size cap, and latency over N samples.

>>> http = HttpProbe()
>>> reply = http.get("http://127.0.0.1:18016/health", timeout=2)
>>> reply.status, reply.ok, reply.elapsed_ms
(200, True, 1.7)
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from acgs_verify.hosts import reach
from acgs_verify.redact import one_line

MAX_BODY_BYTES = 1 << 20  # a health body is a few hundred bytes; never buffer more than this

# httpx's timeouts apply to each socket operation, so a server that drips a byte a second never trips
# them. The request's deadline lives here, and every connect, handshake, read and write is given at most
# the time left before it.
_deadline: ContextVar[float | None] = ContextVar("acgs_http_deadline", default=None)
_url: ContextVar[str] = ContextVar("acgs_http_url", default="")  # the request's URL, for the reach step


@dataclass
class Reply:
    url: str
    status: int | None = None
    elapsed_ms: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    error: str | None = None
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300

    def json(self) -> tuple[Any, str | None]:
        """(parsed body, None) or (None, why it is not usable JSON)."""
        if self.truncated:
            return None, f"body larger than {MAX_BODY_BYTES} bytes"
        try:
            return json.loads(self.body), None
        except (ValueError, UnicodeDecodeError) as exc:
            return None, f"body is not JSON ({one_line(exc)}): {self.body[:80]!r}"

    def describe(self) -> str:
        if self.error:
            return f"no answer from {self.url}: {self.error}"
        where = self.headers.get("location") if self.status and 300 <= self.status < 400 else None
        return f"HTTP {self.status} in {self.elapsed_ms:.0f} ms" + (f", redirect to {where}" if where else "")


@dataclass
class Latency:
    samples_ms: list[float]
    failures: list[str]

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile, so p99 of 20 samples is the slowest one, as an SRE would read it."""
        if not self.samples_ms:
            return math.inf
        ordered = sorted(self.samples_ms)
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    @property
    def p50(self) -> float:
        return self.percentile(50)

    @property
    def p99(self) -> float:
        return self.percentile(99)


class HttpProbe:
    """One connection pool per process, reused across checks; health replies cached per run."""

    def __init__(self, verify: bool | str = True):
        self._verify = verify
        self._client = None
        self._cache: dict[str, Reply] = {}
        self._latencies: dict[str, Latency] = {}  # SVC-06's samples, which SVC-12 judges again

    @property
    def client(self):
        if self._client is None:
            httpx = _httpx()  # ~60 ms of imports: only when a check does HTTP

            # Loading the CA bundle for a verifying TLS context costs 30-150 ms, and most profiles name only
            # http:// services: the https:// transport is built at the first https:// request.
            self._client = httpx.Client(transport=_plain_transport(), mounts={"https://": _OnFirstUse(self._tls)},
                                        follow_redirects=False, trust_env=False,
                                        headers={"User-Agent": "acgs-verify"})
        return self._client

    def _tls(self):
        httpx = _httpx()

        verify = self._verify
        if isinstance(verify, str):  # a CA file: httpx wants a context for it (verify=<str> is deprecated)
            import ssl

            verify = ssl.create_default_context(cafile=verify)
        return _with_deadline(httpx.HTTPTransport(verify=verify, trust_env=False))

    def get(self, url: str, timeout: float) -> Reply:
        """GET url; never takes longer than `timeout` seconds in all, never reads more than MAX_BODY_BYTES.

        In a run, a host or port found not answering (hosts/reach.py) raises Unreachable at once instead of
        waiting out this request's own timeout: it could not be measured, which is no reply."""
        httpx = _httpx()

        reply = Reply(url)
        start = time.perf_counter()
        deadline = start + timeout
        token, url_token = _deadline.set(time.monotonic() + timeout), _url.set(url)
        try:
            with self.client.stream("GET", url, timeout=httpx.Timeout(timeout)) as resp:
                reply.status = resp.status_code
                reply.headers = {k.lower(): v for k, v in resp.headers.items()}
                chunks, size = [], 0
                for chunk in resp.iter_raw():
                    size += len(chunk)
                    if size > MAX_BODY_BYTES:
                        reply.truncated = True
                        break
                    chunks.append(chunk)
                    if time.perf_counter() > deadline:
                        raise httpx.ReadTimeout("body still arriving at the deadline")
                reply.body = b"".join(chunks)
        except httpx.TimeoutException:
            reply.status = None
            reply.error = f"timed out after {timeout:g} s"
        except httpx.HTTPError as exc:
            reply.status = None
            reply.error = _reason(exc)
        finally:
            _deadline.reset(token)
            _url.reset(url_token)
        reply.elapsed_ms = (time.perf_counter() - start) * 1000
        if reply.error is None and reply.elapsed_ms > timeout * 1000:
            reply.error = f"answered after {reply.elapsed_ms:.0f} ms, over the {timeout:g} s limit"
        return reply

    def get_cached(self, url: str, timeout: float) -> Reply:
        """The same endpoint read once per run serves every check that judges it."""
        if url not in self._cache:
            self._cache[url] = self.get(url, timeout)
        return self._cache[url]

    def latency(self, url: str, samples: int, timeout: float) -> Latency:
        result = Latency([], [])
        for _ in range(samples):
            r = self.get(url, timeout)
            if r.error is None:  # a 503 still has a latency; only no answer at all is a failed sample
                result.samples_ms.append(r.elapsed_ms)
            else:
                # one sample without an answer decides the check: waiting out N more timeouts would not
                result.failures.append(r.describe())
                break
        self._latencies[url] = result
        return result

    def measured_latency(self, url: str) -> Latency | None:
        """The samples latency() took of `url` in this run (SVC-06's), or None: SVC-12 judges them again rather
        than measuring a second time."""
        return self._latencies.get(url)

    def forget(self) -> None:
        self._cache.clear()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _httpx():
    """httpx without its command line: its package imports httpx._main, and with it click, pygments and rich,
    whenever they are installed (uvicorn, for the sandbox, brings click): ~25 ms of every run's CPU for a command no
    probe runs. httpx catches that import's ImportError (its way of going without them), which a None entry in
    sys.modules raises."""
    sys.modules.setdefault("httpx._main", None)
    import httpx

    return httpx

def _with_deadline(transport):
    pool = getattr(transport, "_pool", None)
    if pool is None or not hasattr(pool, "_network_backend"):
        raise RuntimeError("httpx/httpcore changed: cannot install the request deadline")
    pool._network_backend = _deadline_backend()
    return transport


def _plain_transport():
    """The transport of http:// URLs. It never speaks TLS (redirects are not followed, no proxy is used), so its
    context is a bare one that verifies against no CA at all: were it ever asked for TLS, it would refuse."""
    import ssl

    httpx = _httpx()

    return _with_deadline(httpx.HTTPTransport(verify=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), trust_env=False))


class _OnFirstUse:
    """A transport built by `make` at its first request, and only then, once whichever thread asks: httpx's
    BaseTransport interface (handle_request, close, the context manager), without importing httpx to define it."""

    def __init__(self, make):
        self._make, self._inner, self._lock = make, None, threading.Lock()

    def handle_request(self, request):
        with self._lock:
            if self._inner is None:
                self._inner = self._make()
        return self._inner.handle_request(request)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

def _reason(exc: Exception) -> str:
    text = one_line(exc)
    for known in ("Connection refused", "Name or service not known", "Temporary failure in name resolution",
                  "No route to host", "certificate verify failed", "Connection reset"):
        if known.lower() in text.lower():
            return known.lower() if known != "certificate verify failed" else "TLS: " + text
    return text


def _clamp(timeout: float | None) -> float | None:
    import httpcore

    deadline = _deadline.get()
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("request deadline passed")
    return left if timeout is None else min(timeout, left)


def _deadline_backend():
    """An httpcore network backend whose every socket operation ends by the request's deadline."""
    import httpcore

    class Stream(httpcore.NetworkStream):
        def __init__(self, inner):
            self._inner = inner

        def read(self, max_bytes, timeout=None):
            return self._inner.read(max_bytes, _clamp(timeout))

        def write(self, buffer, timeout=None):
            return self._inner.write(buffer, _clamp(timeout))

        def close(self):
            return self._inner.close()

        def start_tls(self, ssl_context, server_hostname=None, timeout=None):
            return Stream(self._inner.start_tls(ssl_context, server_hostname, _clamp(timeout)))

        def get_extra_info(self, info):
            return self._inner.get_extra_info(info)

    class Backend(httpcore.NetworkBackend):
        def __init__(self):
            self._inner = httpcore.SyncBackend()

        def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
            reach.gate(host, port, kind="http", url=_url.get())  # raises Unreachable; a no-op outside a run
            return Stream(self._inner.connect_tcp(host, port, _clamp(timeout), local_address, socket_options))

        def connect_unix_socket(self, path, timeout=None, socket_options=None):
            return Stream(self._inner.connect_unix_socket(path, _clamp(timeout), socket_options))

        def sleep(self, seconds):
            return self._inner.sleep(seconds)

    return Backend()
