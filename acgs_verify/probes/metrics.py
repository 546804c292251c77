"""Prometheus text exposition: whether a body is what Prometheus can scrape, and counters summed by label.

>>> exposition(reply.body)          # prometheus_client's own parser; ProbeError when Prometheus could not scrape it
Exposition(families=3, samples=[('acgs_http_requests_total', {'status': '200', ...}, 40.0), ...], names=[...])
>>> samples = parse(text)           # lenient: only the sample lines it understands
>>> error_ratio(samples, "acgs_http_requests_total")
(3, 1200)      # (5xx requests, all requests), health and metrics probes left out
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from acgs_verify.errors import ProbeError
from acgs_verify.redact import one_line
from acgs_verify.words import plural

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass(frozen=True)
class Exposition:
    families: int
    samples: list[tuple[str, dict[str, str], float]]
    names: list[str]  # metric family names, in the order the body declares them
    partial: bool = False  # the body was cut at the probe's size cap: only its complete lines were parsed


def exposition(body: bytes, truncated: bool = False) -> Exposition:
    """Parse `body` as Prometheus text exposition with prometheus_client's parser (what a scrape would read).

    Raises ProbeError with the reason and the first 80 bytes (repr-escaped) when the body is empty, is JSON (an
    object, or Prometheus text wrapped in a JSON string, as some ACGS services answer), does not parse, or holds
    no sample. `truncated`: the body was cut at a size cap; its last, partial line is left out.
    """
    from prometheus_client.parser import text_string_to_metric_families

    head = f"first 80 bytes: {body[:80]!r}"
    if not body.strip():
        raise ProbeError("empty body: no metric at all")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProbeError(f"not UTF-8 (byte {exc.start}), so not Prometheus text; {head}") from None
    if truncated:
        text = text[: text.rfind("\n") + 1]
    _refuse_json(text, head)
    try:
        families = list(text_string_to_metric_families(text))
    except Exception as exc:  # the parser raises ValueError, IndexError, ... on malformed lines
        raise ProbeError(f"not Prometheus text exposition ({one_line(exc)}); {head}") from None
    samples = [(s.name, dict(s.labels), float(s.value)) for f in families for s in f.samples]
    if not samples:
        n = len(families)
        raise ProbeError(f"Prometheus text with {plural(n, 'metric family', 'metric families')} and no sample; {head}")
    return Exposition(len(families), samples, [f.name for f in families], truncated)


def _refuse_json(text: str, head: str) -> None:
    stripped = text.strip()
    if not stripped or stripped[0] not in "{[\"":
        return
    try:
        data = json.loads(stripped)
    except ValueError:
        return  # `{` cannot start Prometheus text either; the parser says what is wrong
    if isinstance(data, str):
        inside = " (Prometheus text inside it)" if "# TYPE" in data or "# HELP" in data else ""
        raise ProbeError(f"a JSON string{inside}, not Prometheus text: Prometheus cannot scrape it; {head}")
    raise ProbeError(f"a JSON {type(data).__name__ if not isinstance(data, dict) else 'object'}, not Prometheus "
                     f"text: Prometheus cannot scrape it; {head}")


def parse(text: str) -> list[tuple[str, dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        try:
            value = float(m.group("value"))
        except ValueError:
            continue
        out.append((m.group("name"), dict(_LABEL.findall(m.group("labels") or "")), value))
    return out


def value_of(samples, name: str) -> float | None:
    for n, _labels, v in samples:
        if n == name:
            return v
    return None


def error_ratio(samples, name: str = "acgs_http_requests_total",
                skip_paths: tuple[str, ...] = ("/health", "/metrics")) -> tuple[float, float]:
    errors = total = 0.0
    for n, labels, v in samples:
        if n != name:
            continue
        path = labels.get("endpoint", labels.get("path", labels.get("handler", "")))
        if path.startswith(skip_paths):
            continue
        total += v
        if labels.get("status", labels.get("code", "")).startswith("5"):
            errors += v
    return errors, total
