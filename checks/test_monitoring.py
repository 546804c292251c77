"""Monitoring: runbook 'Monitoring and Alerting' and 'Incident Detection'."""

from acgs_verify.check import runbook
from acgs_verify.probes.logs import unresolved_critical_alerts


@runbook("MON-01")
def test_no_unresolved_critical_alert(node, logs, profile, thresholds, check):
    """tail -f /var/log/acgs/alerts.log"""
    path, window = profile.paths.alerts_log, thresholds.alert_window_minutes
    lines = logs.tail(node.host, path, thresholds.log_tail_lines)
    alerts = unresolved_critical_alerts(lines, window)
    if alerts:
        check.evidence("unresolved critical alerts", "\n".join(a.line for a in alerts[-20:]))
    shown = "; ".join(a.line[-160:] for a in alerts[-3:])
    check.that(not alerts, measured=f"{len(alerts)} unresolved CRITICAL alerts in the last {window:g} min of "
               f"{path} ({len(lines)} lines read)" + (f": {shown}" if alerts else ""),
               expected=f"0 in {window:g} min")
