"""Profiles that misbehave, generated: whatever the mutation, the result is a valid profile or one
ProfileError line, never another exception and never a hang (how fast is `make bench`'s business)."""

from __future__ import annotations

import copy

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acgs_verify.profile import ProfileError, load_profile
from tests.conftest import run_cli

BASE = {
    "extends": None,
    "constitutional_hash": "cdd01ef066bc6cf2",
    "hosts": [{"name": "app-1", "address": "127.0.0.1", "backend": "local", "roles": ["app"]}],
    "services": [{"name": "auth", "port": 8016, "health_path": "/health", "process": "uvicorn.*auth",
                  "log": "/var/log/acgs/auth_service.log"}],
    "databases": [{"name": "primary", "dsn": "postgresql://acgs@db/acgs_production", "password_file": "/nonexistent"}],
    "redis": [{"name": "cache", "url": "redis://cache:6379/0"}],
    "paths": {"logs": "/var/log/acgs"},
    "thresholds": {"db_long_query_seconds": 300, "disk_percent_max": 90},
}

# A 100 000-character value. The mutated data carries a stand-in, which yaml.safe_dump writes the same way (a plain
# scalar; keys come from st.text) and the written YAML then gets the real value: byte for byte what dumping the real
# value writes, without the pure-Python emitter's 70 ms per copy (half of this test's time went there).
HUGE, HUGE_STAND_IN = "x" * 100_000, "x" * 64  # st.text(max_size=50) never makes the stand-in
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=True),
                    st.text(max_size=50), st.just("${UNSET_VAR_FOR_FUZZ}"), st.just(HUGE_STAND_IN))
values = st.recursive(scalars, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                      st.dictionaries(st.text(max_size=8), kids, max_size=4)),
                      max_leaves=20)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


@st.composite
def mutated_profiles(draw):
    data = copy.deepcopy(BASE)
    del data["extends"]
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(data) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for k in path[:-1]:
            parent = parent[k]
        action = draw(st.sampled_from(["replace", "delete", "unknown_key"]))
        if action == "replace":
            parent[path[-1]] = draw(values)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = draw(values)
    return yaml.safe_dump(data, allow_unicode=True).replace(HUGE_STAND_IN, HUGE).encode()


raw_breakage = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda b, cut: b[:cut], st.just(yaml.safe_dump(BASE).encode()), st.integers(0, 400)),
    st.builds(lambda depth: ("a:\n" + "".join("  " * i + "- \n" for i in range(1, depth))).encode(),
              st.integers(1, 200)),
    st.builds(lambda depth: ("[" * depth + "]" * depth).encode(), st.integers(1, 5000)),
    st.just(b"\xff\xfe\x00n\x00a\x00m\x00e"),
)


def _assert_one_line_or_valid(tmp_path, content: bytes) -> None:
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(content)
    try:
        load_profile(str(path))
    except ProfileError as exc:
        text = str(exc)
        assert text and "\n" not in text and "Traceback" not in text


@settings(max_examples=200, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(content=mutated_profiles())
def test_mutated_profiles_are_valid_or_one_line(tmp_path, content):
    _assert_one_line_or_valid(tmp_path, content)


@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(content=raw_breakage)
def test_broken_bytes_are_one_line(tmp_path, content):
    _assert_one_line_or_valid(tmp_path, content)


def test_billion_laughs_and_a_huge_file_through_the_cli(tmp_path):
    bomb = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        p, c = chr(96 + i), chr(97 + i)
        bomb.append(f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]")
    cases = {"bomb.yaml": ("\n".join(bomb) + "\n").encode(), "huge.yaml": b"description: " + b"x" * (3 << 20),
             "latin1.yaml": "description: caf\xe9\n".encode("latin-1")}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        # a bomb that expanded would not end: the timeout fails the test rather than hang it
        res = run_cli("run", "--profile", str(tmp_path / name), "--report-dir", str(tmp_path / "r"), timeout=120)
        assert res.returncode == 3, (name, res.stdout, res.stderr)
        assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr, res.stderr
        assert name in res.stderr
