"""report.html: one self-contained file (no scripts, no external assets) an auditor can open anywhere.

Verdict first, then failures (worst first) with their evidence and the runbook's next step, the maintenance
comparison, per-section tables, a per-host summary, and the compliance trend from history as an inline SVG.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from xml.sax.saxutils import escape

from acgs_verify.redact import printable
from acgs_verify.report.view import outcome_word, view_of
from acgs_verify.results import RunResult

TEMPLATES = Path(__file__).parent / "templates"
TEMPLATE = "report.html.j2"
COLOR = {0: "#2e7d32", 1: "#f9a825", 2: "#c62828", 3: "#6d6d6d"}
_OPTIONS = {"autoescape": True, "trim_blocks": True, "lstrip_blocks": True}


def render_html(result: RunResult) -> str:
    return "".join(_pieces(result))


def _pieces(result: RunResult) -> Iterator[str]:
    """The page as the template yields it, never whole: at 200 hosts the page (8 MB) and its escaped copy were on
    top of the run's peak while the reports were written."""
    view = view_of(result)
    pieces = _environment().get_template(TEMPLATE).generate(
        v=view, r=result, outcome=outcome_word, trend_svg=trend_svg(view.trend), color=COLOR[result.exit_code])
    # autoescaping leaves control characters alone: every piece shows each as an escape (`\x1b`; one character
    # at a time, so a piece's edge splits none), whichever field carried it; lines and tabs are HTML's own
    return (printable(piece, multiline=True) for piece in pieces)


def compile_template() -> None:
    """Write the compiled template beside it (`make env`, as it byte-compiles the modules)."""
    _environment(write=True).get_template(TEMPLATE)


def _environment(write: bool | None = None):
    """The template, compiled once rather than at every run (~50 ms of each run's reports): jinja's bytecode
    cache in templates/__pycache__, as Python keeps a module's. Used only for the same source (jinja checks its
    checksum), jinja version and options; written unless PYTHONDONTWRITEBYTECODE is set (write=None), and one that
    cannot be read or written is compiled as before."""
    import jinja2  # only when a report is written

    class Cache(jinja2.FileSystemBytecodeCache):
        def get_cache_key(self, name: str, filename: str | None = None) -> str:
            return super().get_cache_key(f"{name}|jinja2 {jinja2.__version__}|{sorted(_OPTIONS.items())}", filename)

        def load_bytecode(self, bucket) -> None:
            try:
                super().load_bytecode(bucket)
            except Exception:  # noqa: BLE001 -- unreadable: compiled from the source, as without a cache
                bucket.reset()

        def dump_bytecode(self, bucket) -> None:
            if write or (write is None and not sys.dont_write_bytecode):
                try:
                    Path(self.directory).mkdir(exist_ok=True)
                    super().dump_bytecode(bucket)
                except OSError:  # a read-only install: compiled again next time
                    pass

    return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                              bytecode_cache=Cache(str(TEMPLATES / "__pycache__")), **_OPTIONS)


def write_html(result: RunResult, path: Path) -> None:
    from acgs_verify.report import atomic_file

    with atomic_file(path) as f:
        for piece in _pieces(result):
            f.write(piece.encode())


def trend_svg(points: list[dict], width: int = 640, height: int = 176) -> str:
    """Compliance rate per run as a line with one dot per run (colored by its exit code), 0-100 % scale."""
    pts = [p for p in points if p.get("compliance_rate") is not None]
    if not pts:
        return ""
    left, right, top, bottom = 44, 12, 10, 40
    w, h = width - left - right, height - top - bottom
    step = w / max(1, len(pts) - 1)

    def xy(i: int, rate: float) -> tuple[float, float]:
        return left + (i * step if len(pts) > 1 else w / 2), top + h * (1 - rate)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" aria-label="compliance trend" '
             f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" class="trend">']
    for pct in (0, 50, 100):
        y = top + h * (1 - pct / 100)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{pct}%</text>')
    line = " ".join("{:.1f},{:.1f}".format(*xy(i, p["compliance_rate"])) for i, p in enumerate(pts))
    parts.append(f'<polyline fill="none" stroke="#1565c0" stroke-width="2" points="{line}"/>')
    for i, p in enumerate(pts):
        x, y = xy(i, p["compliance_rate"])
        label = escape(f"{p.get('started', '')} {p.get('gate', '')}: {100 * p['compliance_rate']:.1f} %")
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{COLOR.get(p.get("exit_code"), "#555")}">'
                     f"<title>{label}</title></circle>")
    ticks, caption = axis_labels([str(p.get("started", "")) for p in pts])
    for i, text in ticks:
        x, _ = xy(i, 0)
        anchor = "start" if i == 0 and len(pts) > 1 else "end" if i == len(pts) - 1 and len(pts) > 1 else "middle"
        parts.append(f'<line x1="{x:.1f}" y1="{top + h:.1f}" x2="{x:.1f}" y2="{top + h + 4:.1f}" stroke="#999"/>')
        parts.append(f'<text class="tick" x="{x:.1f}" y="{top + h + 17:.1f}" font-size="11" '
                     f'text-anchor="{anchor}">{escape(text)}</text>')
    parts.append(f'<text x="{left + w / 2:.1f}" y="{height - 4}" font-size="11" fill="#555" text-anchor="middle">'
                 f"{escape(caption)}</text>")
    parts.append("</svg>")
    return "".join(parts)


AXIS_TICKS = 5


def axis_labels(started: list[str], ticks: int = AXIS_TICKS) -> tuple[list[tuple[int, str]], str]:
    """Up to `ticks` (run index, label) pairs for the trend's time axis, each label different from the others,
    and a caption saying what the labels leave out (the day, when all runs are of one day).

    >>> axis_labels(["2025-06-01T02:00:00+00:00", "2025-06-01T02:05:00+00:00"])
    ([(0, '02:00'), (1, '02:05')], 'run start, UTC, 2025-06-01')
    """
    from datetime import UTC, datetime

    n = len(started)
    picked = sorted({round(k * (n - 1) / (ticks - 1)) for k in range(ticks)}) if n > ticks else list(range(n))
    times = []
    for i in picked:
        try:
            t = datetime.fromisoformat(started[i])
            times.append((i, t.astimezone(UTC) if t.tzinfo else t))
        except ValueError:
            times.append((i, None))
    days = {t.date() for _, t in times if t is not None}
    one_day = len(days) == 1
    formats = ("%H:%M", "%H:%M:%S") if one_day else ("%Y-%m-%d", "%m-%d %H:%M", "%m-%d %H:%M:%S")
    for fmt in formats:  # the coarsest that tells the ticks apart
        labels = [(i, t.strftime(fmt) if t is not None else started[i][:19]) for i, t in times]
        if len({text for _, text in labels}) == len(labels):
            break
    out, seen = [], set()
    for i, text in labels:  # runs started within the same second: one label for them
        if text not in seen:
            seen.add(text)
            out.append((i, text))
    caption = f"run start, UTC, {next(iter(days)).isoformat()}" if one_day else "run start, UTC"
    return out, caption
