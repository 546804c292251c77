"""report.md: the run for a ticket or a PR comment (GitLab and GitHub render it, `<details>` included)."""

from __future__ import annotations

import re
from pathlib import Path

from acgs_verify.redact import printable
from acgs_verify.report.view import outcome_word, view_of
from acgs_verify.results import RunResult


def _special(text: str, i: int, table: bool, line_start: bool) -> bool:
    """Would GitHub or GitLab read text[i] as markup (emphasis, a link, an HTML tag, a table cell's end, ...)?"""
    ch, before, after = text[i], text[i - 1:i], text[i + 1:i + 2]
    if ch in "*~`":
        return True
    if ch == "_":
        return not (before.isalnum() and after.isalnum())  # snake_case is no emphasis
    if ch == "\\":
        return after != "" and not after.isalnum() and not after.isspace()  # only before punctuation it escapes
    if ch == "<":
        return after.isalpha() or after in ("/", "!", "?")  # a tag or an autolink, not `<= 26 h`
    if ch == "]":
        return after in ("(", "[", ":")  # would close a link: `[x](y)`, `[x][y]`, `[x]: y`
    if ch == "|":
        return table
    return i == 0 and line_start and ch in "#>+-["


def _escape(text: str, table: bool, line_start: bool = False) -> str:
    return "".join("\\" + ch if _special(text, i, table, line_start) else ch for i, ch in enumerate(text))


def _code(text, table: bool = False) -> str:
    """`text` as a code span GitHub and GitLab show as typed: a backtick fence longer than any backtick run in
    it (padded with a space when it starts or ends with one), no backslash escapes inside but the `\\|` a table
    cell needs (GFM reads it as `|` there)."""
    text = " ".join(str(text).split())
    ticks = "`"
    while ticks in text:
        ticks += "`"
    pad = " " if text[:1] == "`" or text[-1:] == "`" else ""
    return f"{ticks}{pad}{text.replace('|', chr(92) + '|') if table else text}{pad}{ticks}"


def _inline(text, table: bool = False) -> str:
    """Plain text (a message, a next step) as one line of Markdown that renders as typed: the code spans it has
    stay code spans, everything else is escaped (`<unit>` is not an HTML tag, `*.log` not emphasis)."""
    text = " ".join(str(text or "").split())
    runs = [(m.start(), m.end()) for m in re.finditer(r"`+", text)]
    out, pos, k = [], 0, 0
    while k < len(runs):
        start, end = runs[k]
        closing = next((j for j in range(k + 1, len(runs)) if runs[j][1] - runs[j][0] == end - start), None)
        if closing is None:  # no run as long to close it: literal backticks
            k += 1
            continue
        out.append(_escape(text[pos:start], table, pos == 0))
        inner = text[end:runs[closing][0]]
        out.append(text[start:end] + (inner.replace("|", "\\|") if table else inner) + text[start:end])
        pos, k = runs[closing][1], closing + 1
    out.append(_escape(text[pos:], table, pos == 0))
    return "".join(out)


def _cell(text) -> str:
    return _inline(text, table=True)


def _fence(text: str) -> str:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return f"{ticks}\n{text}\n{ticks}"


def render_markdown(result: RunResult) -> str:
    v = view_of(result)
    rate = f", compliance {100 * result.compliance_rate:.1f} %" if result.compliance_rate is not None else ""
    out = [f"# ACGS {v.verdict}: {_inline(v.headline)}", "",
           f"profile {_code(result.profile)}, gate {_code(result.gate)}, run {_code(result.run_id)}, "
           f"started {result.started}, {result.duration:.1f} s{rate}", ""]
    # what did not answer comes first: one block per host or target, its checks folded into it, its reach step
    for b in v.blocks:
        out += [f"## Unreachable: {_inline(b.target)}", "", f"**{_inline(b.line)}.**", "",
                f"**Tried:** {_inline(b.error)}", "", f"**Reach step:** {_inline(b.next_step)}", "",
                f"<details><summary>{_inline(b.line)}</summary>", "",
                ", ".join(_code(c.name) for c in b.checks), "", "</details>", ""]
    if v.interrupted:
        out += [f"**{_inline(v.interrupted)}**", ""]
    if v.escalation:
        then = v.escalation.get("then_line")
        out += ["## Escalation", "", f"**{_inline(v.escalation['line'])}**", ""]
        out += [f"If unresolved: {_inline(then)}", ""] if then else []
    if result.gate_failures:
        out += ["## Gate closed", ""] + [f"- **{_inline(g)}**" for g in result.gate_failures] + [""]
    out += [f"## Failures ({len(v.failures)})", ""]
    if not v.failures:
        out += ["No check measured something wrong." if v.blocks or v.errors else "No check failed.", ""]
    for card in v.cards:
        c = card.check
        tries = f" ({c.attempts} attempts)" if c.attempts > 1 else ""
        out += [f"### {c.severity} {_inline(c.name)}: {_inline(c.title)}{tries}", ""]
        if card.why:
            out += [_inline(card.why), ""]
        if card.measured is not None:
            expected = f"; **expected:** {_inline(card.expected)}" if card.expected else ""
            out += [f"**Measured:** {_inline(card.measured)}{expected}", ""]
        out += [f"**Next step:** {_inline(card.next_step)}", ""]
        for name, text in c.evidence.items():
            out += [f"<details><summary>Evidence: {_inline(name)}</summary>", "", _fence(text), "", "</details>", ""]
    if v.errors:  # could not measure, each with the step that restores the reach, never the runbook's repair
        out += [f"## Could not measure ({len(v.errors)})", ""]
        for card in v.errors:
            c = card.check
            out += [f"### {c.severity} {_inline(c.name)}: {_inline(c.title)}", "", _inline(card.why), "",
                    f"**Reach step:** {_inline(card.next_step)}", ""]
    comp = v.comparison
    if comp:
        out += ["## Compared with the pre-maintenance snapshot", "",
                f"snapshot {_code(comp['snapshot'])} (run {_code(comp['before_run'])}, started "
                f"{comp['before_started']})", ""]
        out += [f"- **REGRESSION** {r['severity']} {_code(r['name'])}{' (waived)' if r['waived'] else ''}: passed "
                f"before, {r['after']} now{': ' + _inline(r['message']) if r['message'] else ''}"
                for r in comp["regressions"]]
        out += [f"- **service vanished**: {_code(s)}" for s in comp["vanished_services"]]
        out += [f"- **table vanished**: {_code(t)}" for t in comp["vanished_tables"]]
        out += [f"- **Redis keys vanished**: {_code(k)}" for k in comp["vanished_keys"]]
        out += [f"- version changed: {_code(x['service'])} {_inline(x['before'])} -> {_inline(x['after'])}"
                for x in comp["versions_changed"]]
        out += [f"- fixed: {_code(name)}" for name in comp["fixed"]]
        if not (comp["regressions"] or comp["vanished_services"] or comp["vanished_tables"]):
            out += ["- no regressions, nothing vanished"]
        out += [""]
    if v.waived:
        out += [f"## Waived failures ({len(v.waived)})", "",
                "| check | reason | owner | expires |", "|---|---|---|---|"]
        out += [f"| {_code(c.name, table=True)} | {_cell(c.waived['reason'])} | {_cell(c.waived['owner'])} | "
                f"{c.waived['expires']} |" for c in v.waived] + [""]
    if v.warnings:
        out += ["## Warnings", ""] + [f"- {c.severity} {_code(c.name)}: {_inline(c.warning)}" for c in v.warnings]
        out += [""]
    if v.availability:
        t = v.availability_target
        out += [f"## Availability (MON-02), target {t['target_percent']:g} % over {t['window_days']:g} days", "",
                "| service | availability | target | outcome | measured |", "|---|---|---|---|---|"]
        out += [f"| {_cell(a.target)} | {'-' if a.percent is None else f'{a.percent:.2f} %'} | "
                f">= {t['target_percent']:g} % | {a.outcome} | {_cell(a.detail)} |" for a in v.availability] + [""]
    if result.notes:
        out += ["## Notes", ""] + [f"- {_inline(n)}" for n in result.notes] + [""]
    out += ["## Per host", ""]
    if v.hosts:
        out += ["| host | passed | failed | could not measure | waived | skipped |", "|---|---|---|---|---|---|"]
        out += [f"| {_cell(h.host)} | {h.counts['passed']} | {h.counts['failed']} | {h.counts['error']} | "
                f"{h.counts['waived']} | {h.counts['skipped']} |" for h in v.hosts] + [""]
    else:
        out += ["No check ran on a host.", ""]
    if v.others:
        out += ["## Other targets", "",
                "| target | checked by | passed | failed | could not measure | waived | skipped |",
                "|---|---|---|---|---|---|---|"]
        out += [f"| {_cell(h.host)} | {_cell(h.kind)} | {h.counts['passed']} | {h.counts['failed']} | "
                f"{h.counts['error']} | {h.counts['waived']} | {h.counts['skipped']} |" for h in v.others] + [""]
    for s in v.sections:
        out += [f"## {s.title}", "", "| ID | sev | target | outcome | measured |", "|---|---|---|---|---|"]
        out += [f"| {c.id} | {c.severity} | {_cell(c.target)} | {outcome_word(c)} | "
                f"{_cell(c.measured or (c.message if c.outcome == 'skipped' else ''))} |" for c in s.checks] + [""]
    # one pass over the whole page, so no field is missed: what a target said is shown as escapes (`\x1b`), never
    # sent raw to the terminal that cats the file or the renderer that shows it; lines and tabs are the format's
    return printable("\n".join(out), multiline=True)


def write_markdown(result: RunResult, path: Path) -> None:
    from acgs_verify.report import atomic_write

    atomic_write(path, render_markdown(result))
