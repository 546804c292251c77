"""Cache: runbook 'Initial Assessment', 'High Latency', 'Application Optimization'. Read commands only."""

from acgs_verify.check import runbook
from acgs_verify.probes.redis import hit_rate
from acgs_verify.words import plural

MIN_PINGS = 100


@runbook("RD-01")
def test_ping_answers_pong(cache, caches, thresholds, check):
    """redis-cli ping"""
    ms = caches.get(cache).ping()
    limit = thresholds.redis_timeout_seconds
    check.below(ms / 1000, limit, "s", what="PONG in", shown=f"PONG in {ms:.1f} ms", value=round(ms, 2))


@runbook("RD-02")
def test_command_round_trip_p99(cache, caches, thresholds, check):
    """redis-cli --latency-history"""
    # like redis-cli, many samples: a PING takes ~0.1 ms, and with 100 one scheduling hiccup of this
    # (shared) machine is not the p99
    n = max(thresholds.latency_samples, MIN_PINGS)
    limit = thresholds.redis_latency_p99_ms_max
    lat, first = caches.get(cache).latency(n), None
    if not lat.failures and lat.p99 >= limit:  # as SVC-06: a stall of the checker is not slow again, a slow server is
        first, lat = lat, caches.get(cache).latency(n)
    if lat.failures:
        check.fail(f"{len(lat.failures)} of {n} PINGs failed, first: {lat.failures[0]}")
    shown = f"p50 {lat.p50:.2f} ms, p99 {lat.p99:.2f} ms over {len(lat.samples_ms)} PINGs"
    if first is not None:
        shown += f" (taken again: a first {len(first.samples_ms)} had p99 {first.p99:.2f} ms)"
    check.below(lat.p99, limit, "ms", what="p99", shown=shown,
                value={"p50_ms": round(lat.p50, 3), "p99_ms": round(lat.p99, 3)})


@runbook("RD-03")
def test_keyspace_hit_rate(cache, caches, thresholds, check):
    """redis-cli info stats | grep keyspace"""
    hits, misses = hit_rate(caches.get(cache).info("stats"))
    lookups, least = hits + misses, thresholds.redis_hit_rate_min_lookups
    if lookups < least:
        check.skip(f"only {lookups} lookups since the statistics were reset; the rate means something from {least}")
    rate = 100 * hits / lookups
    limit = thresholds.redis_hit_rate_percent_min
    check.at_least(rate, limit, "%", shown=f"{rate:.1f} % ({plural(hits, 'hit')}, {plural(misses, 'miss')})",
                   value=round(rate, 2))
