"""The options `acgs-verify run` and `pytest checks` share, declared once for both parsers.

    >>> [o.flag for o in SHARED]
    ['--profile', '--set', '--gate', '--since', '--waivers', '--report-dir', '--shard', '--run-group']
    >>> pytest_args({"gate": "smoke", "set": ["a.b=1"], "since": None})
    ['--set', 'a.b=1', '--gate', 'smoke']

cli.py adds them to `run` (argparse, dest `gate`), plugin.py to pytest (dest `acgs_gate`); the CLI hands the
values it was given to pytest with pytest_args(). No pytest import here: the CLI reads this table at every start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

DEFAULT_PROFILE = "sandbox"
DEFAULT_GATE = "compliance"  # every check, no gate rules: what a run without --gate is
DEFAULT_REPORT_DIR = "reports"  # acgs-verify run only: plain pytest writes no reports unless asked


@dataclass(frozen=True)
class Option:
    flag: str
    help: str
    default: Any = None
    metavar: str | None = None
    action: str | None = None  # "append" for the repeatable ones

    @property
    def name(self) -> str:
        """`--report-dir` -> 'report_dir', argparse's dest (the plugin's is 'acgs_' + name)."""
        return self.flag.removeprefix("--").replace("-", "_")

    def kwargs(self) -> dict:
        """What both argparse's add_argument and pytest's addoption take."""
        kw = {"metavar": self.metavar, "action": self.action}
        return {"default": self.default, "help": self.help, **{k: v for k, v in kw.items() if v is not None}}


def _gates() -> str:
    from acgs_verify.catalog import GATES

    return ", ".join(GATES)


SHARED: tuple[Option, ...] = (
    # None rather than "sandbox": the plugin tells a run of the checks (a profile named) from the suite's own tests
    Option("--profile", "environment profile, by name or path (default: acgs-verify run takes the running "
           f"sandbox's profile; pytest takes {DEFAULT_PROFILE})", metavar="PROFILE"),
    Option("--set", "override one profile field for this run (repeatable), e.g. thresholds.db_long_query_seconds=60",
           default=[], metavar="dotted.key=VALUE", action="append"),
    # checked by gate_problem() rather than argparse `choices`, so a bad gate is one line and exit 3 in both
    Option("--gate", f"run the checks of one gate: {_gates()} (default: {DEFAULT_GATE}, every check)",
           default=DEFAULT_GATE, metavar="GATE"),
    Option("--since", "log checks read only lines since TIME: ISO time, a duration (30m, 2h, 1d) or 'snapshot' "
           "(the pre-maintenance snapshot's start; acgs-verify run only)", metavar="TIME"),
    Option("--waivers", "YAML file of waived failures: id, target (pattern), reason, owner, expires", metavar="FILE"),
    Option("--report-dir", "write reports into REPORT_DIR/<run id>/ and point REPORT_DIR/latest at it "
           f"(default: {DEFAULT_REPORT_DIR} with acgs-verify run; none with plain pytest)", metavar="REPORT_DIR"),
    # checked by shards.resolve() in both, for the same one line and exit 3
    Option("--shard", "run the checks of shard K of N only: hosts (with all their checks) and targets without a "
           "host, assigned by a hash of their name; join the shards with acgs-verify merge", metavar="K/N"),
    Option("--run-group", "the id shared by the shards of one run, which merge checks (default: the CI pipeline's, "
           "from CI_PIPELINE_ID or GITHUB_RUN_ID and GITHUB_RUN_ATTEMPT; needed with --shard elsewhere)",
           metavar="ID"),
)
BY_NAME = {o.name: o for o in SHARED}


def profile_name(value: str | None) -> str:
    """profile_name(None) -> 'sandbox'; a named profile stays as it is."""
    return value or DEFAULT_PROFILE


def gate_problem(gate: str) -> str | None:
    """gate_problem("lunch") -> "unknown gate 'lunch'; gates: smoke, ..."; None for a known gate."""
    from acgs_verify.catalog import GATES

    return None if gate in GATES else f"unknown gate {gate!r}; gates: {', '.join(GATES)}"


def pytest_args(values: dict[str, Any]) -> list[str]:
    """The plugin's arguments for the shared options in `values` (by name); None is left out, a list repeats."""
    args: list[str] = []
    for option in SHARED:
        value = values.get(option.name)
        for one in (value if isinstance(value, list | tuple) else [value]):
            if one is not None:
                args += [option.flag, str(one)]
    return args


# --since: a duration before now, or a time (which probes/logs.py's `within` compares log lines with)
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
SINCE_CLOCK_SLACK = timedelta(minutes=1)  # a time typed from another machine's clock may run a little ahead


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`90s`, `30m`, `2h`, `1d`, `1w` before now, or an ISO 8601 time (local time when it names no zone).

    Raises ValueError with a one-line reason for anything else.
    """
    text = text.strip()
    now = now or datetime.now(UTC)
    m = _DURATION.match(text)
    try:
        if m:
            return now - timedelta(seconds=float(m.group(1)) * _UNIT_SECONDS[m.group(2)])
        since = datetime.fromisoformat(text.replace("Z", "+00:00"))
        since = since if since.tzinfo is not None else since.astimezone()  # no zone: local time
    except (OverflowError, ValueError) as exc:
        if isinstance(exc, OverflowError) or m:
            raise ValueError(f"--since {text!r}: reaches back before the year 1") from None
        raise ValueError(f"--since {text!r}: expected an ISO time (2025-06-01T02:00), "
                         "a duration (90s, 30m, 2h, 1d) or 'snapshot'") from None
    if since > now + SINCE_CLOCK_SLACK:  # a window that opens later holds no line yet: every log check would fail
        raise ValueError(f"--since {text!r}: is in the future (now {now.astimezone():%Y-%m-%d %H:%M %Z})")
    return since
