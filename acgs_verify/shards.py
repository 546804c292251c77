"""One run split across CI jobs by host (`run --shard K/N`), and its shards joined back into one run (`merge`).

    >>> s = resolve("2/3", None, "compliance", {"CI_PIPELINE_ID": "4711"})
    Shard(index=2, count=3, group='gitlab-4711')
    >>> s.owns("app-1")                  # every check of host app-1 is in the same one shard of 3
    >>> merge_results([summary_1, summary_2])   # RunResult; shard 3 missing -> a gate failure (exit 2)

Assignment is by a hash of the host's name (a target without a host: its own id), not its place in the profile,
so adding a host moves no other host, and every shard of a run, on any machine, agrees on it.
"""

from __future__ import annotations

import hashlib
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from acgs_verify.catalog import GATES
from acgs_verify.results import RunResult, in_catalog_order

SHARD_KEY = "shard"  # summary.json: {"index": 2, "count": 3, "group": "gitlab-4711"}
MERGED_KEY = "merged"  # summary.json of a merged run: group, count, the shards' run ids, the missing ones
MAX_SHARDS = 1024
# A CI system's id of one pipeline run, the same in each of its parallel jobs: the default run group. GitHub's
# attempt is part of it: a re-run workflow is a new run, whose shards must not mix with the first attempt's.
CI_GROUP_VARIABLES = (("gitlab", ("CI_PIPELINE_ID",)), ("github", ("GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT")),
                      ("buildkite", ("BUILDKITE_BUILD_ID",)), ("jenkins", ("BUILD_TAG",)))


class ShardError(Exception):
    """Bad --shard / --run-group, or shards that cannot be merged; str() is the one line a user sees."""


@dataclass(frozen=True)
class Shard:
    index: int  # 1..count
    count: int
    group: str

    def owns(self, key: str) -> bool:
        """Whether the checks of `key` (a host name, or the id of a target without a host) are in this shard."""
        return shard_of(key, self.count) == self.index

    def as_dict(self) -> dict:
        return {"index": self.index, "count": self.count, "group": self.group}


def shard_of(key: str, count: int) -> int:
    """shard_of("app-1", 3) -> 1, 2 or 3, the same in every process and on every machine (not Python's hash())."""
    return 1 + int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") % count


def key_of(target, check_id: str) -> str:
    """What a check is assigned by: its target's host name, else the target's id (`primary`, `cache`,
    `backups`), else its catalog ID."""
    host = getattr(target, "host", None)
    if host is not None:
        return host.name
    return target.id if target is not None else check_id


def parse_shard(text: str) -> tuple[int, int]:
    """parse_shard("2/3") -> (2, 3); "0/3", "4/3", "x" -> ShardError."""
    k, sep, n = str(text).partition("/")
    try:
        index, count = int(k), int(n)
    except ValueError:
        index = count = 0
    if not sep or count < 1 or count > MAX_SHARDS or not 1 <= index <= count:
        raise ShardError(f"--shard {text!r}: must be K/N with 1 <= K <= N <= {MAX_SHARDS}, e.g. 2/4")
    return index, count


def ci_group(env: Mapping[str, str]) -> str | None:
    """The run group a CI system gives its parallel jobs: {"CI_PIPELINE_ID": "4711"} -> 'gitlab-4711'."""
    for system, names in CI_GROUP_VARIABLES:
        if all(env.get(n) for n in names):
            return "-".join([system, *(env[n] for n in names)])
    return None


def resolve(shard: str | None, group: str | None, gate: str, env: Mapping[str, str] | None = None) -> Shard | None:
    """--shard and --run-group as given (the group defaulting to the CI's pipeline id): a Shard, None without
    --shard, or ShardError for bad input."""
    if shard is None:
        if group is not None:
            raise ShardError(f"--run-group {group!r}: names the run the shards of --shard K/N belong to; "
                             "give --shard too")
        return None
    index, count = parse_shard(shard)
    if GATES.get(gate, {}).get("snapshot"):
        # the snapshot is of the whole environment, and the comparison would find other shards' checks vanished
        raise ShardError(f"--shard with --gate {gate}: a maintenance gate writes or compares one snapshot of the "
                         "whole environment; run it unsharded")
    group = group if group is not None else ci_group(os.environ if env is None else env)
    if not group or not group.strip() or len(group) > 200 or any(c.isspace() for c in group):
        raise ShardError("--shard needs --run-group ID (one word, the same for every shard of the run) "
                         "outside CI; in GitLab or GitHub Actions it defaults to the pipeline's run id")
    return Shard(index, count, group)


# ------------------------------------------------------------------------------------------------- merge


def merge_results(results: list[tuple[Path, RunResult]], run_id: str) -> RunResult:
    """The shards of one run (each with the directory it was read from) as one RunResult, or ShardError naming
    the first one that does not belong. A shard that is missing closes the gate (exit 2) and says so in every
    report; an interrupted shard leaves the whole run incomplete (exit 3), as an interrupted run would."""
    shards: dict[int, tuple[Path, RunResult]] = {}
    first_path, first = results[0]
    for path, r in results:
        info = r.extra.get(SHARD_KEY)
        if not isinstance(info, dict):
            raise ShardError(f"{path}: not a shard (run without --shard); merge joins the shards of one run")
        first_info = first.extra[SHARD_KEY]
        for what, mine, theirs in (("profile", r.profile, first.profile), ("gate", r.gate, first.gate),
                                   ("run group", info.get("group"), first_info.get("group")),
                                   ("shard count", info.get("count"), first_info.get("count"))):
            if mine != theirs:
                raise ShardError(f"{path}: {what} {mine!r}, but {first_path} has {theirs!r}; "
                                 "merge joins the shards of one run only")
        index = info.get("index")
        if index in shards and shards[index][1].run_id != r.run_id:
            raise ShardError(f"{path}: shard {index} of {info['count']} given twice (also {shards[index][0]})")
        shards[index] = (path, r)
    parts = [r for _, (_, r) in sorted(shards.items())]
    first = parts[0]
    count, group = first.extra[SHARD_KEY]["count"], first.extra[SHARD_KEY]["group"]
    missing = [k for k in range(1, count + 1) if k not in shards]
    start = min(_time(r.started) for r in parts)
    end = max(_time(r.started) + timedelta(seconds=r.duration) for r in parts)
    checks = in_catalog_order(c for r in parts for c in r.checks)
    merged = RunResult(
        run_id=run_id, profile=first.profile, gate=first.gate, started=start.isoformat(timespec="seconds"),
        duration=(end - start).total_seconds(), constitutional_hash=first.constitutional_hash, checks=checks,
        complete=all(r.complete for r in parts),
        # a profile's notes are in every shard; a shard that held nothing is not a filter that went wrong
        notes=list(dict.fromkeys(n for r in parts for n in r.notes if r.checks or not n.startswith("no checks"))),
        gate_failures=list(dict.fromkeys(g for r in parts for g in r.gate_failures)),
        planned=sum(r.planned or len(r.checks) for r in parts),
    )
    # what every shard says alike (the log window, ...) stays; per-shard state (its trend, --wait) does not
    for key, value in first.extra.items():
        if key not in (SHARD_KEY, "trend", "wait") and all(r.extra.get(key) == value for r in parts):
            merged.extra[key] = value
    _escalate(merged, parts)
    merged.gate_failures += [f"shard {k} of {count} missing: its hosts and targets were not checked"
                             for k in missing]
    merged.notes[:0] = [f"merged from shard{'s' if len(parts) > 1 else ''} "
                        f"{', '.join(map(str, sorted(shards)))} of {count} (run group {group})"] + [
        f"shard {k} of {count} held no checks: no host or target of the profile hashes to it"
        for k, (_, r) in sorted(shards.items()) if not r.checks and r.complete]
    merged.extra[MERGED_KEY] = {"group": group, "count": count, "missing": missing,
                                "shards": [{"index": k, "run_id": r.run_id, "exit_code": r.exit_code}
                                           for k, (_, r) in sorted(shards.items())]}
    return merged


def _escalate(merged: RunResult, parts: list[RunResult]) -> None:
    """Who to notify for the whole run: the most severe of the shards' answers (each worked it out from the profile's
    escalation section), counting the whole run's failures of that severity."""
    from acgs_verify.escalation import SEVERITY_ORDER

    answers = [r.extra["escalation"] for r in parts if isinstance(r.extra.get("escalation"), dict)]
    failing = [a for a in answers if a.get("severity") in SEVERITY_ORDER]
    if failing:
        top = min(failing, key=lambda a: SEVERITY_ORDER.index(a["severity"]))
        merged.extra["escalation"] = {**top, "failed": sum(1 for c in merged.failed if c.severity == top["severity"])}
    elif answers:
        merged.extra["escalation"] = answers[0]


def _time(iso: str) -> datetime:
    return datetime.fromisoformat(iso)


def merge_junit(sources: list[Path], missing: list[int], count: int, target: Path) -> None:
    """One junit.xml from the shards' (their test cases in one suite, recounted), with a failing test case for
    each missing shard so that a CI's test view shows it too."""
    from acgs_verify.report import atomic_write

    trees = []
    for path in sources:
        try:
            trees.append(ET.parse(path))
        except (OSError, ET.ParseError) as exc:
            raise ShardError(f"{path}: not a readable junit.xml ({exc})") from None
    root = ET.Element("testsuites")
    suite = ET.SubElement(root, "testsuite", {"name": "acgs-verify"})
    seconds = 0.0
    for tree in trees:
        for one in tree.getroot().iter("testsuite"):
            seconds = max(seconds, float(one.get("time") or 0))
            suite.extend(one.iter("testcase"))
    for k in missing:
        case = ET.SubElement(suite, "testcase", {"classname": "acgs_verify.shards", "name": f"shard {k} of {count}"})
        ET.SubElement(case, "failure", {"message": f"shard {k} of {count} missing: its hosts and targets were not "
                                                   "checked"})
    cases = list(suite.iter("testcase"))
    suite.set("tests", str(len(cases)))
    for tag, attr in (("failure", "failures"), ("error", "errors"), ("skipped", "skipped")):
        suite.set(attr, str(sum(1 for tc in cases if tc.find(tag) is not None)))
    suite.set("time", f"{seconds:.3f}")
    atomic_write(target, ET.tostring(root, encoding="utf-8", xml_declaration=True))
