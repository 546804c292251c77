"""The compliance rate of recent governance decisions, from every source a profile names (CC-04).

>>> compliance_rates(profile, pg_pool, http_probe)
{'audit_logs@primary: 412 decisions in 24 h': 99.51, 'constitutional-ai@app-1 acgs_constitutional_compliance': 99.8}

Sources: each database's audit table (decisions within its compliance window; a table without recent
decisions gives no rate rather than a made-up one) and each service whose `compliance_metric` is named
(a 0..1 gauge on its metrics_path). A source that cannot be read raises ProbeError.
"""

from __future__ import annotations

from acgs_verify.errors import ProbeError
from acgs_verify.probes import metrics, postgres
from acgs_verify.profile import Profile
from acgs_verify.words import plural


def compliance_rates(profile: Profile, pg, http) -> dict[str, float]:
    rates: dict[str, float] = {}
    for db in profile.databases:
        if not db.audit_table:
            continue
        compliant, total = postgres.decision_compliance(pg.get(db), db)
        if total:
            window = f"{db.compliance_window_hours:g} h"
            where = f"{db.audit_table}@{db.name}: {plural(total, 'decision')} in {window}"
            rates[where] = round(100 * compliant / total, 2)
    # every instance of a service, as the `service` targets are (a probe does not import the target layer)
    for svc, host in ((s, h) for s in profile.services for h in profile.hosts_with_role(s.role)):
        if not (svc.compliance_metric and svc.metrics_path):
            continue
        where = f"{svc.name}@{host.name}"
        reply = http.get(svc.url_on(host.address, svc.metrics_path),
                         timeout=profile.thresholds.health_timeout_seconds)
        if not reply.ok:
            raise ProbeError(f"{where} metrics unavailable: {reply.describe()}")
        value = metrics.value_of(metrics.parse(reply.body.decode("utf-8", "replace")), svc.compliance_metric)
        if value is None:
            raise ProbeError(f"{where} {svc.metrics_path} has no {svc.compliance_metric}")
        rates[f"{where} {svc.compliance_metric}"] = round(100 * value, 2)
    return rates
