"""Log probes: the last N lines of a log without reading the whole file, and what those lines say.

>>> lines = tail_lines("/var/log/acgs/auth_service.log", 5000)
>>> hash_mentions(lines)            # every constitutional hash a line names
Counter({'cdd01ef066bc6cf2': 1})
>>> request_statuses(lines)         # HTTP statuses of request lines, health probes left out
[200, 200, 500]
>>> within(lines, since)         # only the lines since --since (options.parse_since: "2h", an ISO time)

Reads both formats the services write: `%(asctime)s - %(name)s - %(levelname)s - %(message)s` and JSON lines.
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from datetime import datetime

from acgs_verify.errors import ProbeError
from acgs_verify.probes.bounded import size_text
from acgs_verify.redact import one_line

BLOCK = 64 * 1024
# the bytes a log tail reads, whatever its line count: 5000 lines of a sane log are ~1 MB; a log of long lines gets
# fewer lines, and one without a newline none (1 GiB of it once took 2.1 GB over ssh, and gawk 9 GB)
MAX_TAIL_BYTES = 16 << 20
READ_TIMEOUT_SECONDS = 30  # for those bytes, on a host whose disk or file system hangs

_PLAIN = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?)\s+-\s+(?P<logger>\S+)"
    r"\s+-\s+(?P<level>[A-Z]+)\s+-\s+(?P<msg>.*)$"
)
_HASH = re.compile(r"constitutional[ _-]?hash[\"']?\s*[:=]\s*[\"']?([0-9a-fA-F]{16})\b", re.IGNORECASE)
_STATUS_KV = re.compile(r"\bstatus(?:_code)?[=:]\s*\"?(\d{3})\b")
_STATUS_ACCESS = re.compile(r"\"[A-Z]+ (?P<path>\S+) HTTP/[\d.]+\"\s+(?P<status>\d{3})\b")
_PATH_KV = re.compile(r"\bpath[=:]\s*\"?(\S+?)\"?(?:\s|$)")
PROBE_PATHS = ("/health", "/metrics")  # monitoring traffic, not users': left out of error rates


@dataclass
class LogLine:
    raw: str
    timestamp: datetime | None
    level: str | None
    message: str
    fields: dict

    @property
    def status(self) -> int | None:
        value = self.fields.get("status", self.fields.get("status_code"))
        if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
            return int(value)
        m = _STATUS_KV.search(self.message) or _STATUS_ACCESS.search(self.message)
        return int(m.group(m.lastindex if m.re is _STATUS_KV else "status")) if m else None

    @property
    def path(self) -> str | None:
        if isinstance(self.fields.get("path"), str):
            return self.fields["path"]
        m = _PATH_KV.search(self.message)
        if m:
            return m.group(1)
        m = _STATUS_ACCESS.search(self.message)
        return m.group("path") if m else None


def tail_lines(path: str, n: int, max_bytes: int = MAX_TAIL_BYTES,
               timeout: float = READ_TIMEOUT_SECONDS) -> list[str]:
    """The last n lines of a local file among its last `max_bytes` bytes, reading backwards block by block
    (constant memory in the file size); ProbeError if that takes longer than `timeout` seconds.

    Undecodable bytes are replaced and NULs dropped, so a damaged log is still read. A line cut by the byte cap
    is dropped, so a log of one endless line holds no line rather than a slice of it.
    """
    try:
        # O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ProbeError(f"log {path} does not exist") from None
    except PermissionError:
        raise ProbeError(f"log {path}: permission denied") from None
    except OSError as exc:
        raise ProbeError(f"log {path}: {exc.strerror}") from None
    deadline = time.monotonic() + timeout
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ProbeError(f"log {path} is not a regular file")
        # one byte more than the cap: it tells whether the first line read began at a line start
        want = max_bytes + 1
        pos, chunks, newlines, read = st.st_size, [], 0, 0
        while pos > 0 and newlines <= n and read < want:
            if time.monotonic() > deadline:
                raise ProbeError(f"log {path}: its last {read} bytes took longer than {timeout:g} s to read")
            size = min(BLOCK, pos, want - read)
            pos -= size
            chunk = os.pread(fd, size, pos)
            if not chunk:  # cut short under us (truncated, rotated): what was read is the tail
                break
            chunks.append(chunk)
            newlines += chunk.count(b"\n")
            read += len(chunk)
    finally:
        os.close(fd)
    data = b"".join(reversed(chunks))
    del chunks
    return last_lines(path, data, n, cut=pos > 0)


def last_lines(path: str, data: bytes, n: int, cut: bool) -> list[str]:
    """The last `n` lines of `data`, the end of the log `path`; with `cut` (more of the log lies before `data`)
    the bytes up to the first newline are dropped: they may be the end of a line whose start was not read.
    ProbeError when not one whole line is left: a log of one endless line has no line to judge."""
    if cut:
        start = data.find(b"\n")
        if start < 0 or start == len(data) - 1:
            raise ProbeError(f"log {path}: its last {size_text(len(data) - 1)} hold no whole line (a log tail is "
                             "read up to that many bytes): not read")
        data = data[start + 1:]
    return data.replace(b"\0", b"").decode("utf-8", errors="replace").splitlines()[-n:]


def parse(line: str, timestamp: bool = True) -> LogLine:
    """One line of either format; timestamp=False leaves its time unread (None), for a caller that needs none."""
    if line.startswith("{"):
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        if isinstance(obj, dict):
            level = obj.get("level") or obj.get("levelname") or obj.get("severity")
            message = str(obj.get("message") or obj.get("msg") or obj.get("event") or "")
            ts = _parse_ts(obj.get("timestamp") or obj.get("time") or obj.get("asctime")) if timestamp else None
            return LogLine(line, ts, str(level).upper() if level else None, message, obj)
    m = _PLAIN.match(line)
    if m:
        return LogLine(line, _parse_ts(m.group("ts")) if timestamp else None, m.group("level"), m.group("msg"), {})
    return LogLine(line, None, None, line, {})


def _parse_ts(value) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace(",", ".").replace("Z", "+00:00"))
    except ValueError:
        return None


def _aware(ts: datetime) -> datetime:
    # `%(asctime)s` is the host's local time without a zone: read it as local time
    return ts if ts.tzinfo is not None else ts.astimezone()


def within(lines: list[str], since: datetime) -> list[str]:
    """The lines written at or after `since`, oldest first.

    A line without a timestamp (a traceback, a continuation) goes with the line before it. Lines before the
    first timestamp cannot be placed: they are kept only when no line has a timestamp at all, so a log in an
    unknown format is still read whole rather than silently emptied.
    """
    kept: list[str] = []
    inside: bool | None = None
    for line in lines:
        ts = parse(line).timestamp
        if ts is not None:
            inside = _aware(ts) >= since
        if inside:
            kept.append(line)
    return kept if inside is not None else list(lines)


def hash_mentions(lines: list[str]) -> Counter:
    """How often each constitutional hash is named (`Constitutional Hash: X`, `"constitutional_hash": "X"`)."""
    found: Counter = Counter()
    for line in lines:
        for m in _HASH.finditer(line):
            found[m.group(1).lower()] += 1
    return found


def lines_with(lines: list[str], needle: str) -> list[str]:
    return [line for line in lines if needle in line]


def request_statuses(lines: list[str]) -> list[int]:
    """HTTP statuses of the request lines, leaving out health and metrics probes."""
    out = []
    for line in lines:
        # the path first: most request lines are the probes', whose status is not wanted (3x faster over 5000 lines)
        parsed = parse(line, timestamp=False)
        if (parsed.path or "").startswith(PROBE_PATHS):
            continue
        status = parsed.status
        if status is not None:
            out.append(status)
    return out


# Tails kept at once: a 5000-line tail is ~1 MB of str objects, and 50 hosts x 6 logs kept them all (466 MB
# peak RSS, BENCHMARKS.md). The plugin runs a host's checks together, so the logs of one host are read once.
KEEP_TAILS = 8


def read_tail(conn, path: str, n: int, max_bytes: int = MAX_TAIL_BYTES, timeout: float = READ_TIMEOUT_SECONDS
              ) -> list[str]:
    """The last `n` lines of `path` on a remote host among its last `max_bytes` bytes:
    `timeout T tail -c BYTES -- PATH` (tail seeks to the end: it never reads or sends more than BYTES of a log,
    however long its lines); ProbeError with tail's reason, or when the file is not a regular file."""
    result = conn.run("if [ -e %s ] && [ ! -f %s ]; then echo 'not a regular file' >&2; exit 3; fi; "
                      "exec timeout %s tail -c %s -- %s", path, path, str(int(timeout)), str(max_bytes + 1), path)
    if result.rc == 124:
        raise ProbeError(f"log {path}: its last {max_bytes} bytes were not read within {int(timeout)} s")
    if result.rc != 0:
        raise ProbeError(f"log {path}: {one_line(result.stderr)}")
    data = result.stdout_bytes
    return last_lines(path, data, n, cut=len(data) > max_bytes)


def tail_command(path: str, n: int, max_bytes: int = MAX_TAIL_BYTES, timeout: float = READ_TIMEOUT_SECONDS) -> str:
    """A POSIX shell pipeline printing what read_tail returns, for a command that reads a log on its host (through
    awk): the last `n` complete lines among the last `max_bytes` bytes of the regular file `path`, a shell word
    already quoted (`'/var/log/kern.log'` or `"$f"`). tail -n alone would send all of a log with no newline, and
    awk would hold it as one record. A path that is not a regular file is named on stderr, nothing is read.

    >>> conn.run(f"{tail_command(shlex.quote(log), 5000)} | awk ...")
    """
    b = int(max_bytes)
    return (f"if [ -f {path} ]; then timeout {int(timeout)} tail -c {b + 1} -- {path} | "
            # more than the cap on disk: the first line read may be the end of a longer one
            f"{{ if [ \"$(stat -L -c %s -- {path})\" -gt {b} ]; then sed 1d; else cat; fi; }} | tail -n {int(n)}; "
            f"else printf '%s: not a regular file\\n' {path} >&2; fi")


class LogReader:
    """Reads log tails on a target's host once per run: CC-01, CC-02 and SVC-07 share one read.

    With `since` (acgs-verify run --since), every tail holds only the lines written since then, so each log
    check judges that window without knowing about it.
    """

    def __init__(self, hosts, since: datetime | None = None, keep: int = KEEP_TAILS):
        self._hosts = hosts
        self.since = since
        self._keep = keep
        self._cache: OrderedDict[tuple, list[str]] = OrderedDict()

    def tail(self, host, path: str, n: int, quiet_is_evidence: bool = False) -> list[str]:
        """The last `n` lines of `path` on `host` (within the --since window). An empty window raises ProbeError
        unless `quiet_is_evidence`: for an alerts log, no line since then means no alert was raised."""
        key = (host.name, path, n)
        if key in self._cache:
            self._cache.move_to_end(key)
        else:
            while len(self._cache) >= self._keep:
                self._cache.popitem(last=False)
            if host.backend == "local":
                self._cache[key] = tail_lines(path, n)
            else:
                # through the pool: a fleet's next hosts then have their tails read ahead (HostPool.read_ahead)
                try:
                    self._cache[key] = self._hosts.measure(host, f"log {path}", read_tail, path, n)
                except ProbeError as exc:
                    raise ProbeError(str(exc).replace(f"log {path}:", f"log {path} on {host.name}:", 1)) from None
            if self.since is not None:
                self._cache[key] = within(self._cache[key], self.since)
        if not self._cache[key] and self.since is not None and not quiet_is_evidence:
            # the window is empty, not the log: say so rather than judge "0 of the last 0 lines"
            shown = self.since.astimezone()
            when = f"{shown:%H:%M}" if shown.date() == datetime.now().astimezone().date() else f"{shown:%Y-%m-%d %H:%M}"
            raise ProbeError(f"no lines since {when} in {path} on {host.name}")
        return self._cache[key]

    def lines(self, host, path: str, n: int) -> list[str]:
        """tail(), for checks whose verdict rests on what the lines say: ProbeError when there is no line to judge
        (an empty log, or none written in the --since window), so "0 found" is never said of 0 lines."""
        lines = self.tail(host, path, n)
        if not lines:
            window = f" written since {self.since:%Y-%m-%d %H:%M:%S %Z}".rstrip() if self.since else ""
            raise ProbeError(f"log {path} on {host.name} holds no line{window} in its last {n}: nothing to judge")
        return lines

    def forget(self) -> None:
        self._cache.clear()


# ------------------------------------------------------------------------------------------- alerts
_ALERT_ID = re.compile(r"\[(?:alert[_ -]?id=)?([A-Za-z]+-[\w.-]+)\]", re.IGNORECASE)
_RESOLVED = re.compile(r"\bresolved\b", re.IGNORECASE)


@dataclass
class Alert:
    id: str | None
    timestamp: datetime | None
    line: str


def unresolved_critical_alerts(lines: list[str], window_minutes: float, now: datetime | None = None) -> list[Alert]:
    """CRITICAL alerts raised in the last `window_minutes` with no later line resolving the same alert id.

    Alert lines are ACGS log lines (`... - acgs.alerts - CRITICAL - [ALERT-0042] ...`, resolved by
    `... - INFO - [ALERT-0042] resolved: ...`) or JSON lines with level/severity, alert_id and status.
    A line without a timestamp cannot be placed in the window and is left out.
    """
    open_alerts: dict[str, Alert] = {}
    anonymous: list[Alert] = []
    for raw in lines:
        line = parse(raw)
        alert_id = line.fields.get("alert_id")
        if alert_id is None:
            m = _ALERT_ID.search(line.message)
            alert_id = m.group(1) if m else None
        resolved = str(line.fields.get("status", "")).lower() == "resolved" or bool(_RESOLVED.search(line.message))
        if resolved and alert_id is not None:
            open_alerts.pop(str(alert_id), None)
        elif (line.level or "").upper() in ("CRITICAL", "FATAL") and line.timestamp is not None:
            alert = Alert(str(alert_id) if alert_id is not None else None, line.timestamp, raw)
            if alert.id is None:
                anonymous.append(alert)
            else:
                open_alerts[alert.id] = alert
    out = []
    for alert in [*open_alerts.values(), *anonymous]:
        ts = alert.timestamp
        assert ts is not None
        ref = now or (datetime.now(ts.tzinfo) if ts.tzinfo else datetime.now())
        if ts.tzinfo is None and ref.tzinfo is not None:
            ref = ref.replace(tzinfo=None)
        if (ref - ts).total_seconds() <= window_minutes * 60:
            out.append(alert)
    return out
