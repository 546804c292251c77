"""Certificates (runbook: Security Procedures, "Verify SSL certificates")."""

from __future__ import annotations

from acgs_verify.check import runbook


def _expiry(check, thresholds, what: str, days: float, expected_suffix: str = "") -> None:
    """Not After against cert_fail_days (fails) and cert_warn_days (warns): the same rule for files and endpoints."""
    if thresholds.cert_fail_days < days <= thresholds.cert_warn_days:
        check.warn(f"{what}: {days:.1f} days left, within the {thresholds.cert_warn_days:g}-day warning")
    # the days left lead: they are what an on-call engineer acts on, the chain is how they were read
    check.above(days, thresholds.cert_fail_days, f"days left (warn within {thresholds.cert_warn_days:g})"
                f"{expected_suffix}", shown=f"{days:.1f} days left; {what}", value=round(days, 2))


@runbook("TLS-01")
def test_certificate_file_not_expiring(certificate, hosts, thresholds, check):
    """openssl x509 -in /etc/ssl/acgs/cert.pem -text -noout | grep "Not After" (every certificate in the file)"""
    from acgs_verify.probes.hostfiles import host_files
    from acgs_verify.probes.tls import certificate_file, soonest

    chain = certificate_file(certificate.path, host_files(hosts, certificate.host))
    i, first = soonest(chain)
    which = "leaf" if i == 0 else f"chain certificate {i + 1} of {len(chain)}"
    check.evidence("chain", [c.describe() for c in chain])
    _expiry(check, thresholds, f"{which} {first.describe()} expires first", first.days_left())


@runbook("TLS-02")
def test_tls_endpoint_verifies(tls_endpoint, profile, thresholds, check):
    """openssl s_client -connect HOST:443: the chain verifies, the name matches, not expiring"""
    from acgs_verify.probes.tls import endpoint

    ep = endpoint(tls_endpoint.url, profile.tls.ca_file, thresholds.connect_timeout_seconds)
    trust = f"against {profile.tls.ca_file}" if profile.tls.ca_file else "against the system CAs"
    if not ep.verified:
        check.fail(measured=f"{ep.error}; served {ep.leaf.describe()}, names {list(ep.leaf.names)}",
                   expected=f"a chain that verifies {trust} for {tls_endpoint.id.rsplit(':', 1)[0]}")
    _expiry(check, thresholds, f"chain verified {trust} ({ep.version}); served {ep.leaf.describe()}",
            ep.leaf.days_left(), expected_suffix=", on a chain that verifies")
