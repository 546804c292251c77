"""Compare two snapshots, as the post-maintenance and rollback gates (and `acgs-verify diff`) do.

>>> d = compare(before_snapshot, after_snapshot)
>>> d.regressions[0]["name"], d.vanished_tables, d.versions_changed
('SVC-06[auth@app-1]', ['primary: public.policies'], [{'service': 'auth@app-1', 'before': '4.0.0', 'after': '4.1.0'}])
>>> d.gate_failures()        # what closes the gate: regressions, vanished services and tables
['regression: SVC-06[auth@app-1] passed before, fails now', ...]

A regression is a check that passed in the snapshot and fails now; a check interrupted now (it has no outcome) is
not run now. A service vanished when it answered its health check before and does not now (or is no longer in the
run; a health check interrupted now says neither); a table when it is gone from its
database's list; Redis keys when the snapshot named them and they are gone (or, for a keyspace too large to
name, the count fell).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from acgs_verify.redact import printable

FAILED = ("failed", "error")
INTERRUPTED = "interrupted"


@dataclass
class Comparison:
    before_run: str
    after_run: str
    before_started: str = ""
    regressions: list[dict] = field(default_factory=list)  # name, id, target, severity, waived, before, after
    fixed: list[str] = field(default_factory=list)
    still_failing: list[str] = field(default_factory=list)
    not_run_now: list[str] = field(default_factory=list)
    new_checks: list[str] = field(default_factory=list)
    vanished_services: list[str] = field(default_factory=list)
    new_services: list[str] = field(default_factory=list)
    versions_changed: list[dict] = field(default_factory=list)
    vanished_tables: list[str] = field(default_factory=list)
    new_tables: list[str] = field(default_factory=list)
    vanished_keys: list[str] = field(default_factory=list)
    key_counts: list[dict] = field(default_factory=list)  # redis, before, after
    notes: list[str] = field(default_factory=list)

    def gate_failures(self) -> list[str]:
        """Each way the new run breaks the maintenance gate ("nothing that passed before may fail now,
        no service or table may vanish"). A waived regression does not close the gate."""
        out = [f"regression: {r['name']} passed before, fails now" for r in self.regressions if not r["waived"]]
        out += [f"service vanished: {s}" for s in self.vanished_services]
        out += [f"table vanished: {t}" for t in self.vanished_tables]
        return out

    @property
    def clean(self) -> bool:
        return not (self.gate_failures() or self.vanished_keys)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["gate_failures"] = self.gate_failures()
        return d

    def summary_line(self) -> str:
        """`ACGS DIFF CRITICAL - r1 -> r2: regression: SVC-06[auth@app-1] passed before, fails now (+2 more) |
        regressions=3 fixed=0 versions_changed=0`: one line as short as `run`'s, the lines above it say the rest."""
        failures = self.gate_failures()
        word = "CRITICAL" if failures else "OK"
        text = failures[0] if failures else "no regressions, nothing vanished"
        if len(failures) > 1:
            text += f" (+{len(failures) - 1} more)"
        return (f"ACGS DIFF {word} - {self.before_run} -> {self.after_run}: {text} | "
                f"regressions={len(self.regressions)} fixed={len(self.fixed)} "
                f"versions_changed={len(self.versions_changed)}")

    def lines(self) -> list[str]:
        """The comparison as lines for the terminal and the Markdown report."""
        out = [f"REGRESSION {r['severity']} {r['name']} passed before, {r['after']} now"
               f"{' (waived)' if r['waived'] else ''}{': ' + r['message'] if r['message'] else ''}"
               f"{' (before: ' + str(r['before']) + ')' if r.get('before') else ''}" for r in self.regressions]
        out += [f"VANISHED service {s}" for s in self.vanished_services]
        out += [f"VANISHED table {t}" for t in self.vanished_tables]
        out += [f"VANISHED redis keys {k}" for k in self.vanished_keys]
        out += [f"VERSION {v['service']}: {v['before']} -> {v['after']}" for v in self.versions_changed]
        out += [f"KEYS {k['redis']}: {k['before']} -> {k['after']}" for k in self.key_counts
                if k["before"] != k["after"]]
        out += [f"FIXED {name}" for name in self.fixed]
        out += [f"NOT RUN NOW {name}" for name in self.not_run_now]
        out += [f"NOTE {n}" for n in self.notes]
        # a table or key name, a version, a message: what a target said, shown as escapes on a terminal
        return [printable(line) for line in out]


def compare(before: dict, after: dict, after_messages: dict[str, str] | None = None) -> Comparison:
    """before/after: snapshots (report/snapshot.py). after_messages: failure message per check name, if known."""
    d = Comparison(before_run=before.get("run_id", "?"), after_run=after.get("run_id", "?"),
                   before_started=before.get("started", ""))
    if before.get("profile") and after.get("profile") and before["profile"] != after["profile"]:
        d.notes.append(f"comparing different profiles: {before['profile']} and {after['profile']}")
    b_checks, a_checks = before.get("checks", {}), after.get("checks", {})
    interrupted_now = []
    for name, a in a_checks.items():
        b = b_checks.get(name)
        if a["outcome"] == INTERRUPTED:
            interrupted_now.append(name)
            continue
        if b is None:
            d.new_checks.append(name)
            continue
        if b["outcome"] == "passed" and a["outcome"] in FAILED:
            # what it measured now, or why it could not (a snapshot keeps each failure's finding)
            message = (after_messages or {}).get(name) or a.get("message") or a.get("measured") or ""
            # the lines name the check and the reports its next step: keep what was found
            message = message.removeprefix(f"{a['id']} {a['target']}: ").rpartition(". Next: ")[0] or message
            d.regressions.append({"name": name, "id": a["id"], "target": a["target"], "severity": a["severity"],
                                  "waived": bool(a.get("waived")), "before": b.get("measured"),
                                  "after": a["outcome"], "message": message})
        elif b["outcome"] in FAILED and a["outcome"] == "passed":
            d.fixed.append(name)
        elif b["outcome"] in FAILED and a["outcome"] in FAILED:
            d.still_failing.append(name)
    d.not_run_now = sorted((set(b_checks) - set(a_checks)) | (set(interrupted_now) & set(b_checks)))
    d.regressions.sort(key=lambda r: (r["severity"], r["name"]))

    b_svc, a_svc = before.get("services", {}), after.get("services", {})
    for svc, b in sorted(b_svc.items()):
        a = a_svc.get(svc)
        if b.get("answered") and (a is None or a.get("answered") is False):  # None: interrupted, not known
            d.vanished_services.append(svc)
        if a and b.get("version") and a.get("version") and a["version"] != b["version"]:
            d.versions_changed.append({"service": svc, "before": b["version"], "after": a["version"]})
    d.new_services = sorted(s for s, a in a_svc.items() if s not in b_svc and a.get("answered"))

    b_tab, a_tab = before.get("tables", {}), after.get("tables", {})
    for db, tables in sorted(b_tab.items()):
        if db not in a_tab:
            d.notes.append(f"database {db}: no table list now, tables not compared")
            continue
        d.vanished_tables += [f"{db}: {t}" for t in sorted(set(tables) - set(a_tab[db]))]
        d.new_tables += [f"{db}: {t}" for t in sorted(set(a_tab[db]) - set(tables))]

    b_rd, a_rd = before.get("redis", {}), after.get("redis", {})
    for name, b in sorted(b_rd.items()):
        a = a_rd.get(name)
        if a is None:
            d.notes.append(f"redis {name}: no key count now, keys not compared")
            continue
        d.key_counts.append({"redis": name, "before": b.get("keys"), "after": a.get("keys")})
        if b.get("names") is not None and a.get("names") is not None:
            d.vanished_keys += [f"{name}: {k}" for k in sorted(set(b["names"]) - set(a["names"]))]
        elif isinstance(b.get("keys"), int) and isinstance(a.get("keys"), int) and a["keys"] < b["keys"]:
            d.vanished_keys.append(f"{name}: {b['keys'] - a['keys']} keys (of {b['keys']})")
    return d
