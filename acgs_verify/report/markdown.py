"""report.md: the run for a ticket or a PR comment (GitLab and GitHub render it, `<details>` included)."""

from __future__ import annotations

from pathlib import Path

from acgs_verify.report.view import outcome_word, view_of
from acgs_verify.results import RunResult


def _cell(text) -> str:
    return " ".join(str(text or "").split()).replace("|", "\\|")


def _fence(text: str) -> str:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return f"{ticks}\n{text}\n{ticks}"


def render_markdown(result: RunResult) -> str:
    v = view_of(result)
    rate = f", compliance {100 * result.compliance_rate:.1f} %" if result.compliance_rate is not None else ""
    out = [f"# ACGS {v.verdict}: {v.headline}", "",
           f"profile `{result.profile}`, gate `{result.gate}`, run `{result.run_id}`, started {result.started}, "
           f"{result.duration:.1f} s{rate}", ""]
    if result.gate_failures:
        out += ["## Gate closed", ""] + [f"- **{_cell(g)}**" for g in result.gate_failures] + [""]
    out += [f"## Failures ({len(v.failures)})", ""]
    if not v.failures:
        out += ["No check failed.", ""]
    for c in v.failures:
        tries = f" ({c.attempts} attempts)" if c.attempts > 1 else ""
        out += [f"### {c.severity} {c.name}: {c.title}{tries}", "", _cell(c.message), "",
                f"**Next step:** {_cell(c.next_step)}", ""]
        for name, text in c.evidence.items():
            out += [f"<details><summary>Evidence: {_cell(name)}</summary>", "", _fence(text), "", "</details>", ""]
    comp = v.comparison
    if comp:
        out += ["## Compared with the pre-maintenance snapshot", "",
                f"snapshot `{comp['snapshot']}` (run `{comp['before_run']}`, started {comp['before_started']})", ""]
        out += [f"- **REGRESSION** {r['severity']} `{r['name']}`{' (waived)' if r['waived'] else ''}: passed before, "
                f"{r['after']} now: {_cell(r['message'])}" for r in comp["regressions"]]
        out += [f"- **service vanished**: `{s}`" for s in comp["vanished_services"]]
        out += [f"- **table vanished**: `{t}`" for t in comp["vanished_tables"]]
        out += [f"- **Redis keys vanished**: `{k}`" for k in comp["vanished_keys"]]
        out += [f"- version changed: `{x['service']}` {x['before']} -> {x['after']}" for x in comp["versions_changed"]]
        out += [f"- fixed: `{name}`" for name in comp["fixed"]]
        if not (comp["regressions"] or comp["vanished_services"] or comp["vanished_tables"]):
            out += ["- no regressions, nothing vanished"]
        out += [""]
    if v.waived:
        out += [f"## Waived failures ({len(v.waived)})", "",
                "| check | reason | owner | expires |", "|---|---|---|---|"]
        out += [f"| `{c.name}` | {_cell(c.waived['reason'])} | {_cell(c.waived['owner'])} | {c.waived['expires']} |"
                for c in v.waived] + [""]
    if v.warnings:
        out += ["## Warnings", ""] + [f"- {c.severity} `{c.name}`: {_cell(c.warning)}" for c in v.warnings] + [""]
    if result.notes:
        out += ["## Notes", ""] + [f"- {_cell(n)}" for n in result.notes] + [""]
    out += ["## Per host", "", "| host / target | passed | failed | waived | skipped |", "|---|---|---|---|---|"]
    out += [f"| {h.host} | {h.counts['passed']} | {h.counts['failed'] + h.counts['error']} | {h.counts['waived']} "
            f"| {h.counts['skipped']} |" for h in v.hosts] + [""]
    for s in v.sections:
        out += [f"## {s.title}", "", "| ID | sev | target | outcome | measured |", "|---|---|---|---|---|"]
        out += [f"| {c.id} | {c.severity} | {_cell(c.target)} | {outcome_word(c)} | "
                f"{_cell(c.measured or (c.message if c.outcome == 'skipped' else ''))} |" for c in s.checks] + [""]
    return "\n".join(out)


def write_markdown(result: RunResult, path: Path) -> None:
    from acgs_verify.report import atomic_write

    atomic_write(path, render_markdown(result))
