"""Constitutional compliance: runbook 'Constitutional Compliance Failure'."""

from acgs_verify.check import runbook
from acgs_verify.probes.logs import hash_mentions, lines_with


@runbook("CC-01")
def test_expected_hash_in_recent_log_lines(service_log, logs, profile, thresholds, check):
    """grep "cdd01ef066bc6cf2" /var/log/acgs/*.log | tail -10"""
    n = thresholds.log_tail_lines
    lines = logs.tail(service_log.host, service_log.service.log, n)
    found = lines_with(lines, profile.constitutional_hash)
    if found:
        check.evidence("latest line with the hash", found[-1])
    check.that(bool(found), measured=f"{len(found)} of the last {len(lines)} lines name {profile.constitutional_hash}",
               expected=f"the hash in the last {n} lines of {service_log.service.log}")


@runbook("CC-02")
def test_no_log_line_names_another_hash(service_log, logs, profile, thresholds, check):
    """grep -i "constitutional hash" /var/log/acgs/*.log | grep -v cdd01ef066bc6cf2"""
    lines = logs.tail(service_log.host, service_log.service.log, thresholds.log_tail_lines)
    others = {h: n for h, n in hash_mentions(lines).items() if h != profile.constitutional_hash}
    if others:
        bad = [line for line in lines if any(h in line.lower() for h in others)]
        check.evidence("lines naming another hash", "\n".join(bad[-20:]))
    shown = ", ".join(f"{h} ({n} lines)" for h, n in sorted(others.items())) or "none"
    check.that(not others, measured=f"other hashes named: {shown}",
               expected=f"every named hash is {profile.constitutional_hash}", value=sorted(others))
