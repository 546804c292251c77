"""Monitoring: runbook 'Monitoring and Alerting' and 'Incident Detection'."""

from acgs_verify.check import runbook
from acgs_verify.probes.logs import unresolved_critical_alerts


@runbook("MON-01")
def test_no_unresolved_critical_alert(node, logs, profile, thresholds, check):
    """tail -f /var/log/acgs/alerts.log

    Evidence for a pass: the alerts log exists and is readable (a missing or unreadable log fails), and no
    CRITICAL alert in the window lacks its 'resolved' line. An empty log, or no line since --since, passes: it
    is an alerts log in which nothing was raised, which is what the catalog asks to see. `paths.alerts_log: null`
    skips."""
    path, window = profile.paths.alerts_log, thresholds.alert_window_minutes
    if path is None:
        check.skip("the profile sets paths.alerts_log: null: no component writes an alerts log")
    lines = logs.tail(node.host, path, thresholds.log_tail_lines, quiet_is_evidence=True)
    alerts = unresolved_critical_alerts(lines, window)
    if alerts:
        check.evidence("unresolved critical alerts", "\n".join(a.line for a in alerts[-20:]))
    shown = "; ".join(a.line[-160:] for a in alerts[-3:])
    empty = f"no line since {logs.since:%Y-%m-%d %H:%M}" if logs.since else "the log is empty: no alert written yet"
    read = f"{len(lines)} lines read" if lines else empty
    check.that(not alerts, measured=f"{len(alerts)} unresolved CRITICAL alerts in the last {window:g} min of "
               f"{path} ({read})" + (f": {shown}" if alerts else ""), expected=f"0 in {window:g} min")
