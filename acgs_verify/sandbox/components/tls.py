"""The sandbox's certificates and its live TLS endpoint, with their faults.

Its own CA (DIR/etc/ssl/acgs/ca.pem; the CA key in DIR/secrets/ca.key), a server certificate for 127.0.0.1,
localhost and acgs.internal in DIR/etc/ssl/acgs/cert.pem (leaf, then the CA: a chain) with its key (0600), and
an HTTPS /health on 127.0.0.1:443 + offset serving that certificate (acgs_verify.sandbox.tls_server).

Each fault issues another leaf into cert.pem (expiring in 5 days, expired yesterday, for another name, or
from a CA the profile does not trust) and restarts the endpoint so it serves it; heal issues a good one again.
State slice: {"process": spawn record, "faults": [...]}.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from acgs_verify.sandbox import certs
from acgs_verify.sandbox.components.base import (
    Component,
    Context,
    SandboxError,
    claim_port,
    is_alive,
    port_free,
    python_env,
    spawn,
    stop,
    tail,
)

SSL_DIR = "etc/ssl/acgs"
NAMES = ["127.0.0.1", "localhost", "acgs.internal"]
GOOD_DAYS = 90
EXPIRING_DAYS = 5  # under the default cert_fail_days of 7
READY_TIMEOUT = 10.0


def tls_port(offset: int) -> int:
    return 443 + offset


class Tls(Component):
    name = "tls"
    fault_names = ("cert-expiring", "cert-expired", "cert-wrong-name", "cert-untrusted")

    def up(self, ctx: Context) -> None:
        port = tls_port(ctx.port_offset)
        claim_port(port, "TLS endpoint", ctx.port_offset)
        ctx.state.update(process=None, faults=[])
        ca, ca_key = certs.make_ca("ACGS Sandbox Internal CA")
        certs.write_pem(self._ssl(ctx) / "ca.pem", ca)
        certs.write_key(ctx.dir / "secrets" / "ca.key", ca_key)
        try:
            self._issue(ctx, None)
        except BaseException:
            self.down(ctx)
            raise

    def down(self, ctx: Context) -> list[str]:
        record = ctx.state.get("process")
        stopped = [f"tls endpoint (pid {record['pid']})"] if stop(record) else []
        ctx.state.update(process=None, faults=[])
        ctx.save()
        return stopped

    def status(self, ctx: Context) -> list[dict[str, Any]]:
        record = ctx.state.get("process")
        return [{"name": "tls endpoint", "pid": record["pid"] if record else None, "port": tls_port(ctx.port_offset),
                 "state": "running" if is_alive(record) else ("stopped" if record is None else "down"),
                 "faults": list(ctx.state.get("faults", []))}]

    def profile_fragment(self, ctx: Context) -> dict[str, Any]:
        ssl_dir = self._ssl(ctx)
        return {"certificates": [str(ssl_dir / "cert.pem")],
                "tls_endpoints": [f"https://127.0.0.1:{tls_port(ctx.port_offset)}"],
                "tls": {"ca_file": str(ssl_dir / "ca.pem")}}

    def active_faults(self, ctx: Context) -> list[str]:
        return list(ctx.state.get("faults", []))

    def break_fault(self, ctx: Context, fault: str, target: str) -> None:
        # one certificate is served at a time: a new fault replaces the one before it
        self._issue(ctx, fault)
        ctx.state["faults"] = [fault]
        ctx.save()

    def heal_fault(self, ctx: Context, fault: str, target: str) -> None:
        if fault not in ctx.state.get("faults", []):
            return
        self._issue(ctx, None)
        ctx.state["faults"] = []
        ctx.save()

    # ---------------------------------------------------------------------------------------- helpers
    def _ssl(self, ctx: Context) -> Path:
        return ctx.dir / SSL_DIR

    def _issue(self, ctx: Context, fault: str | None) -> None:
        ssl_dir = self._ssl(ctx)
        ca, ca_key = certs.load(ssl_dir / "ca.pem", ctx.dir / "secrets" / "ca.key")
        names, days, back = NAMES, GOOD_DAYS, 1.0
        if fault == "cert-expiring":
            days = EXPIRING_DAYS
        elif fault == "cert-expired":
            days, back = -1, 90
        elif fault == "cert-wrong-name":
            names = ["wrong.example.org"]
        elif fault == "cert-untrusted":
            ca, ca_key = certs.make_ca("Unknown Rogue CA")
        leaf, key = certs.issue(ca, ca_key, names, days=days, not_before_days=back)
        certs.write_key(ssl_dir / "key.pem", key)
        certs.write_pem(ssl_dir / "cert.pem", leaf, ca)
        self._restart(ctx)

    def _restart(self, ctx: Context) -> None:
        stop(ctx.state.get("process"))
        ssl_dir, port = self._ssl(ctx), tls_port(ctx.port_offset)
        deadline = time.monotonic() + READY_TIMEOUT
        while not port_free(port) and time.monotonic() < deadline:
            time.sleep(0.05)
        run = ctx.dir / "run"
        try:
            record = spawn([ctx.python, "-m", "acgs_verify.sandbox.tls_server", str(ssl_dir / "cert.pem"),
                            str(ssl_dir / "key.pem"), str(port)], python_env(ctx), run / "tls.out", run / "tls.err")
        except OSError as exc:
            raise SandboxError(f"cannot start the TLS endpoint: {exc.strerror}: {ctx.python}") from None
        ctx.state["process"] = record
        ctx.save()
        while (run / "tls.out").read_text().find("listening") < 0:
            if not is_alive(record) or time.monotonic() > deadline:
                raise SandboxError(f"the TLS endpoint did not start on port {port}: {tail(run / 'tls.err')}")
            time.sleep(0.05)
