"""Monitoring: runbook 'Monitoring and Alerting' and 'Incident Detection'."""

from datetime import UTC, datetime, timedelta

from acgs_verify.check import runbook
from acgs_verify.probes.logs import unresolved_critical_alerts
from acgs_verify.words import excerpt, plural


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
    shown = "; ".join(excerpt(a.line, 200) for a in alerts[-3:])
    empty = f"no line since {logs.since:%Y-%m-%d %H:%M}" if logs.since else "the log is empty: no alert written yet"
    read = f"{plural(len(lines), 'line')} read" if lines else empty
    check.equals(len(alerts), 0, what=f"unresolved CRITICAL alerts in the last {window:g} min",
                 shown=f"{plural(len(alerts), 'unresolved CRITICAL alert')} in the last {window:g} min of "
                 f"{path} ({read})" + (f": {shown}" if alerts else ""))


@runbook("MON-02")
def test_service_availability(service, run_history, thresholds, check):
    """Key Metrics: "Service availability: >99.9%"  (share of runs in the window whose SVC-01 passed)"""
    days, need, target = (thresholds.availability_window_days, thresholds.availability_min_runs,
                          thresholds.availability_percent_min)
    since = (datetime.now(UTC) - timedelta(days=days)).isoformat(timespec="seconds")
    ups = [r["services"][service.id]["up"] for r in run_history
           if str(r["started"]) >= since and "up" in r["services"].get(service.id, {})]
    if len(ups) < need:
        check.skip(f"{plural(len(ups), 'run')} in the last {days:g} days recorded SVC-01 for {service.id} in "
                   "history.jsonl; "
                   f"availability needs {need}")
    percent = 100 * sum(ups) / len(ups)
    check.at_least(percent, target, "%", shown=f"{percent:.2f} % available: SVC-01 passed in {sum(ups)} of "
                   f"{plural(len(ups), 'run')} in the last {days:g} days")
