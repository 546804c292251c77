"""A check in one place: its catalog record carries everything about it but the measurement, thresholds of its own
included (catalog.Limit), which the profile then accepts by name like the runbook's own."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from acgs_verify import catalog
from acgs_verify.check import _number
from acgs_verify.profile import model

FRAGMENTATION = {"redis_fragmentation_ratio_max": catalog.Limit(1.5, "ratio of RSS to used memory", gt=1),
                 "redis_fragmentation_min_used_mb": catalog.Limit(64, "used memory below which it is not judged",
                                                                  ge=0)}


def test_a_limit_a_record_declares_is_a_threshold_with_its_default_bounds_and_type(monkeypatch):
    monkeypatch.setattr(catalog, "LIMITS", FRAGMENTATION)
    thresholds = model._with_declared_limits()
    t = thresholds()
    assert (t.redis_fragmentation_ratio_max, t.redis_fragmentation_min_used_mb) == (1.5, 64)
    assert isinstance(t.redis_fragmentation_min_used_mb, int) and t.db_long_query_seconds == 300
    assert thresholds(redis_fragmentation_ratio_max=2).redis_fragmentation_ratio_max == 2
    with pytest.raises(ValidationError, match="greater than 1"):
        thresholds(redis_fragmentation_ratio_max=0.5)
    with pytest.raises(ValidationError, match="Extra inputs"):  # a misspelt key is still refused
        thresholds(redis_fragmentation_ratio=2)
    assert "ratio of RSS" in thresholds.model_fields["redis_fragmentation_ratio_max"].description


def test_a_record_cannot_redeclare_a_runbook_threshold(monkeypatch):
    monkeypatch.setattr(catalog, "LIMITS", {"db_long_query_seconds": catalog.Limit(60, "again")})
    with pytest.raises(ValueError, match="already has: \\['db_long_query_seconds'\\]"):
        model._with_declared_limits()


def test_a_record_with_an_unknown_section_severity_or_kind_is_refused_at_import():
    fields = dict(runbook="x", next_step="y", target="z", evidence="e")
    for bad in (("caches", "P3", "threshold"), ("cache", "P5", "threshold"), ("cache", "P3", "unmeasured")):
        with pytest.raises(ValueError, match="RD-99: unknown"):
            catalog._check("RD-99", *bad, "t", **fields)
    with pytest.raises(ValueError, match="no evidence rule"):
        catalog._check("RD-99", "cache", "P3", "threshold", "t", **{**fields, "evidence": " "})


def test_numbers_in_expectations_read_as_the_runbook_writes_them():
    assert [_number(x) for x in (80, 80.0, 0.5, 1.5, 12.345678, 0.000123, 1_000_000.0)] == [
        "80", "80", "0.5", "1.5", "12.35", "0.000123", "1000000"]
