"""Prometheus text exposition, read just enough to sum counters by label.

>>> samples = parse(text)
>>> error_ratio(samples, "acgs_http_requests_total")
(3, 1200)      # (5xx requests, all requests), health and metrics probes left out
"""

from __future__ import annotations

import re

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


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
