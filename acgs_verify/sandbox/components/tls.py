"""The sandbox's certificates and its live TLS endpoint, with their faults.

Its own CA (DIR/etc/ssl/acgs/ca.pem; the CA key in DIR/secrets/ca.key), a server certificate for 127.0.0.1,
localhost and acgs.internal in DIR/etc/ssl/acgs/cert.pem (leaf, then the CA: a chain) with its key (0600), and
an HTTPS /health on 127.0.0.1:443 + offset serving that certificate (acgs_verify.sandbox.tls_server).

Each fault issues another leaf into cert.pem (expiring in 5 days, expired yesterday, for another name, or
from a CA the profile does not trust) and restarts the endpoint so it serves it; heal issues a good one again.
The ssh host ops-1 has a certificate file of its own, DIR/hosts/ops-1/etc/ssl/acgs/cert.pem (TLS-01 reads it over
ssh): `cert-expiring:ops-1` and `cert-expired:ops-1` issue its leaf that way (the endpoint faults are about what
the endpoint serves, which no file on ops-1 changes). State slice: {"process": spawn record, "faults": [...]}.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from acgs_verify.sandbox import certs
from acgs_verify.sandbox.components.base import (
    Component,
    Context,
    claim_port,
    poll,
    port_free,
    python_env,
    start,
    stop,
    wait_ready,
)
from acgs_verify.sandbox.components.sshd import sshd_binary
from acgs_verify.sandbox.constants import OPS_HOST, OPS_TREE, READY_TIMEOUT, RUN_DIR, SSL_DIR, TLS_PORT, secret_path

NAMES = ["127.0.0.1", "localhost", "acgs.internal"]
GOOD_DAYS = 90
EXPIRING_DAYS = 5  # under the default cert_fail_days of 7
FILE_FAULTS = ("cert-expiring", "cert-expired")  # what TLS-01 reads in a file: these have an ops-1 variant


def tls_port(offset: int) -> int:
    return TLS_PORT + offset


class Tls(Component):
    name = "tls"
    fault_names = ("cert-expiring", "cert-expired", "cert-wrong-name", "cert-untrusted")
    fault_help = {
        "cert-expiring": "the certificate expires within days (TLS-01, TLS-02)",
        "cert-expired": "the certificate has expired (TLS-01, TLS-02)",
        "cert-wrong-name": "the endpoint serves a certificate for another name (TLS-02)",
        "cert-untrusted": "the endpoint serves a certificate no trusted CA signed (TLS-02)",
    }
    daemons = (("process", "tls endpoint"),)

    def fault_targets(self, fault: str) -> list[str]:
        return ["", OPS_HOST] if fault in FILE_FAULTS else []

    def up(self, ctx: Context) -> None:
        port = tls_port(ctx.port_offset)
        claim_port(port, "TLS endpoint", ctx.port_offset)
        ctx.state.update(process=None, faults=[])
        ctx.save()
        ca, ca_key = certs.make_ca("ACGS Sandbox Internal CA")
        certs.write_pem(self._ssl(ctx) / "ca.pem", ca)
        certs.write_key(secret_path(ctx.dir, "ca"), ca_key)
        with self.undone_on_failure(ctx):
            self._issue(ctx, None)
            self._issue_file(ctx, None)

    def status(self, ctx: Context) -> list[dict[str, Any]]:
        return [self.process_row(ctx, "tls endpoint", ctx.state.get("process"), tls_port(ctx.port_offset))]

    def profile_fragment(self, ctx: Context) -> dict[str, Any]:
        ssl_dir = self._ssl(ctx)
        ops = [{"path": str(self._ssl(ctx, OPS_HOST) / "cert.pem"), "host": OPS_HOST}] if sshd_binary() else []
        return {"certificates": [str(ssl_dir / "cert.pem"), *ops],
                "tls_endpoints": [f"https://127.0.0.1:{tls_port(ctx.port_offset)}"],
                "tls": {"ca_file": str(ssl_dir / "ca.pem")}}

    def break_(self, ctx: Context, fault: str, target: str) -> None:
        # one certificate per file at a time: a new fault replaces the one before it on the same host
        if target:
            self._issue_file(ctx, fault)
        else:
            self._issue(ctx, fault)
        ctx.state["faults"] = [f for f in self.active_faults(ctx) if (":" in f) != bool(target)]
        ctx.save()

    def heal(self, ctx: Context, fault: str, target: str) -> None:
        if target:
            self._issue_file(ctx, None)
        else:
            self._issue(ctx, None)

    # ---------------------------------------------------------------------------------------- helpers
    def _ssl(self, ctx: Context, host: str = "") -> Path:
        return ctx.dir / (f"{OPS_TREE}/{SSL_DIR}" if host else SSL_DIR)

    def _issue_file(self, ctx: Context, fault: str | None) -> None:
        """ops-1's certificate file: a leaf of the sandbox CA for ops-1, as `fault` says (no endpoint serves it)."""
        ca, ca_key = certs.load(self._ssl(ctx) / "ca.pem", secret_path(ctx.dir, "ca"))
        days, back = {"cert-expiring": (EXPIRING_DAYS, 1.0), "cert-expired": (-1, 90)}.get(fault or "",
                                                                                            (GOOD_DAYS, 1.0))
        leaf, _ = certs.issue(ca, ca_key, [OPS_HOST, "127.0.0.2"], days=days, not_before_days=back)
        certs.write_pem(self._ssl(ctx, OPS_HOST) / "cert.pem", leaf, ca)

    def _issue(self, ctx: Context, fault: str | None) -> None:
        ssl_dir = self._ssl(ctx)
        ca, ca_key = certs.load(ssl_dir / "ca.pem", secret_path(ctx.dir, "ca"))
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
        poll(lambda: port_free(port), READY_TIMEOUT)  # the old endpoint's socket, on its way out
        run = ctx.dir / RUN_DIR
        record = start("the TLS endpoint", [ctx.python, "-m", "acgs_verify.sandbox.tls_server",
                                            str(ssl_dir / "cert.pem"), str(ssl_dir / "key.pem"), str(port)],
                       python_env(ctx), run, "tls")
        ctx.state["process"] = record
        ctx.save()
        wait_ready(record, run / "tls.err", f"the TLS endpoint did not start on port {port}",
                   lambda: "listening" in (run / "tls.out").read_text(), READY_TIMEOUT)
