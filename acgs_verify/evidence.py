"""The security-incident gate's copy of the logs its checks read (runbook, Security Incident Response: "Preserve
evidence", `cp -r /var/log/acgs/ /var/log/acgs_incident_<time>/`), made without writing on any target.

>>> preserve(profile, run_dir / "evidence", run_id)
{'dir': 'evidence', 'copied_at': '2025-06-01T02:00:00Z', 'files': 9, 'bytes': 48213, 'cut': [], 'not_copied': []}

Which files: what the gate's checks read, from the profile, on every host (sources()):
    SEC-03, SEC-06   paths.security_log, or every paths.logs/*.log
    CC-01, CC-02     each service's `log`, on the hosts with the service's role
    SYS-05           paths.kernel_log, or the output of `dmesg` (saved as `dmesg`)
    (MON-01)         paths.alerts_log: the runbook's copy of /var/log/acgs/ carries it too
(SEC-01, SEC-02, SEC-04, SEC-05, CC-05 read no log: a file tree's modes, secrets' modes, /etc/passwd, key ages and
the audit table. Secret and key files are never copied.)

Each file is read through its host's backend, read-only: a local file directly (its last bytes, pread), an ssh host's
with `tail -c` over the testinfra connection. A file longer than evidence.max_file_mb keeps its tail, and the
copy stops at evidence.max_total_mb; MANIFEST names the cap for every file it cut. EVIDENCE_DIR/<host>/<path> holds
the copies; SHA256SUMS (`sha256sum -c SHA256SUMS` in EVIDENCE_DIR) covers them and MANIFEST.
"""

from __future__ import annotations

import glob
import hashlib
import math
import os
import posixpath
import shlex
import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from acgs_verify.probes.errors import ProbeError
from acgs_verify.profile.model import Host, Profile
from acgs_verify.redact import one_line

EVIDENCE_DIR = "evidence"
MANIFEST = "MANIFEST"
SUMS = "SHA256SUMS"
DMESG = "dmesg"  # the pseudo path of dmesg's output
MB = 1024 * 1024
COMMAND_TIMEOUT_SECONDS = 120  # one file's tail over ssh


@dataclass
class Source:
    pattern: str  # a path or a glob, as the profile gives it; DMESG for the kernel ring buffer
    read_by: list[str] = field(default_factory=list)


def sources(profile: Profile, host: Host) -> list[Source]:
    """The logs the security-incident gate's checks read on `host`, in the order they are copied."""
    out: dict[str, Source] = {}

    def add(pattern: str | None, ids: str) -> None:
        if pattern:
            out.setdefault(pattern, Source(pattern)).read_by.append(ids)

    p = profile.paths
    add(p.security_log or f"{p.logs.rstrip('/')}/*.log", "SEC-03, SEC-06")
    for s in profile.services:
        if s.role in host.roles:
            add(s.log, f"CC-01, CC-02 ({s.name})")
    add(p.kernel_log or DMESG, "SYS-05")
    add(p.alerts_log, "MON-01")
    return list(out.values())


@dataclass
class Copied:
    host: str
    path: str
    size: int  # of the source
    mtime: float
    copied: int
    copied_at: str
    sha256: str
    read_by: str
    cut: str = ""  # why only the tail was copied, naming the cap


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _glob_quote(pattern: str) -> str:
    """Quote a path for the shell but leave its glob characters live: /var/log/acgs/*.log."""
    return "".join(c if c in "*?[]" or c.isalnum() or c in "/._-" else shlex.quote(c) for c in pattern)


def _local_files(pattern: str) -> list[tuple[str, int, float]]:
    paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
    out = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            out.append((path, st.st_size, st.st_mtime))
    return out


def _local_tail(path: str, n: int) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # O_NONBLOCK: a FIFO never blocks the copy
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - n)
        chunks, pos = [], start
        while pos < size:
            chunk = os.pread(fd, min(MB, size - pos), pos)
            if not chunk:
                break
            chunks.append(chunk)
            pos += len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _remote_files(conn, pattern: str) -> list[tuple[str, int, float]]:
    cmd = (f"for f in {_glob_quote(pattern)}; do [ -f \"$f\" ] && [ -r \"$f\" ] || continue; "
           "stat -L -c '%s %Y %n' -- \"$f\"; done")
    result = conn.run(cmd)
    out = []
    for line in result.stdout.splitlines():
        size, mtime, path = (line.split(" ", 2) + ["", ""])[:3]
        if size.isdigit() and path:
            out.append((path, int(size), float(mtime or 0)))
    return out


def _remote_tail(conn, path: str, n: int) -> bytes:
    result = conn.run("tail -c %s -- %s", str(n), path)
    if result.rc != 0:
        raise ProbeError(f"tail -c {n} {path}: {one_line(result.stderr)}")
    return result.stdout_bytes


def _dmesg(conn) -> bytes:
    result = conn.run("dmesg")
    if result.rc != 0:
        raise ProbeError(f"dmesg: {one_line(result.stderr) or f'exit {result.rc}'}")
    return result.stdout_bytes


def _relative(host: str, path: str) -> str | None:
    """<host>/<path without its leading />; None for a name SHA256SUMS cannot list as it is."""
    norm = posixpath.normpath(path).lstrip("/")
    parts = ["__" if part == ".." else part for part in norm.split("/")]
    rel = "/".join([host, *parts])
    return None if any(c in rel for c in "\n\r\\") else rel


def preserve(profile: Profile, evidence_dir: Path, run_id: str, pool=None) -> dict:
    """Copy the logs of sources() from every host into evidence_dir; write MANIFEST and SHA256SUMS; return what
    was done (for result.extra["evidence"]). A host that cannot be reached, or a file that cannot be read, is
    listed under not_copied with the reason; nothing is ever written on a host."""
    from acgs_verify.probes.host import HostPool

    own_pool = pool is None
    if own_pool:
        passphrases = {h.name: profile.secret(f"hosts.{h.name}") for h in profile.hosts}
        pool = HostPool(connect_timeout=profile.thresholds.connect_timeout_seconds, inventory=profile.inventory,
                        passphrases=passphrases)
    file_cap, total_cap = int(profile.evidence.max_file_mb * MB), int(profile.evidence.max_total_mb * MB)
    evidence_dir.mkdir(parents=True, exist_ok=True)
    started = _now()
    copied: list[Copied] = []
    seen: dict[tuple[str, str], Copied] = {}  # a service log that logs/*.log names too is copied once
    not_copied: list[str] = []
    left = total_cap
    try:
        for host in profile.hosts:
            try:
                conn = pool.get(host)
            except ProbeError as exc:
                not_copied.append(f"{host.name}: every log: {exc}")
                continue
            local = host.backend == "local"
            for src in sources(profile, host):
                read_by = "; ".join(src.read_by)
                if src.pattern == DMESG:
                    files: list[tuple[str, int, float]] = [(DMESG, -1, 0.0)]
                else:
                    try:
                        files = _local_files(src.pattern) if local else _remote_files(conn, src.pattern)
                    except Exception as exc:  # testinfra raises backend-specific errors; all mean the same here
                        not_copied.append(f"{host.name}:{src.pattern}: cannot list ({one_line(exc)})")
                        continue
                    if not files:
                        not_copied.append(f"{host.name}:{src.pattern}: no readable file (read by {read_by})")
                for path, size, mtime in files:
                    if (host.name, path) in seen:
                        seen[(host.name, path)].read_by += f"; {read_by}"
                        continue
                    rel = _relative(host.name, path)
                    if rel is None:
                        not_copied.append(f"{host.name}:{path!r}: a name SHA256SUMS cannot list")
                        continue
                    if left <= 0:
                        not_copied.append(f"{host.name}:{path}: the total cap of {_mb(total_cap)} was reached")
                        continue
                    n = min(file_cap, left)
                    when = _now()
                    try:
                        if path == DMESG:
                            data = _dmesg(conn)
                            size = len(data)
                            data = data[-n:]
                        else:
                            data = _local_tail(path, n) if local else _remote_tail(conn, path, n)
                    except (OSError, ProbeError) as exc:
                        not_copied.append(f"{host.name}:{path}: {one_line(exc)}")
                        continue
                    except Exception as exc:  # an ssh connection lost half-way
                        not_copied.append(f"{host.name}:{path}: {type(exc).__name__}: {one_line(exc)}")
                        continue
                    size = max(size, len(data))  # a log that grew between stat and tail
                    cut = ""
                    if len(data) < size:
                        cap = (f"the cap per file, {_mb(file_cap)}" if n == file_cap
                               else f"the total cap, {_mb(total_cap)}")
                        cut = f"cut to its last {len(data)} of {size} bytes by {cap}"
                    out = evidence_dir / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(data)
                    left -= len(data)
                    copied.append(Copied(host.name, path, size, mtime, len(data), when,
                                         hashlib.sha256(data).hexdigest(), read_by, cut))
                    seen[(host.name, path)] = copied[-1]
    finally:
        if own_pool:
            pool.close()
    _write_manifest(evidence_dir, run_id, profile, started, file_cap, total_cap, copied, not_copied)
    return {"dir": EVIDENCE_DIR, "copied_at": started, "files": len(copied), "bytes": sum(c.copied for c in copied),
            "hosts": sorted({c.host for c in copied}), "max_file_bytes": file_cap, "max_total_bytes": total_cap,
            "cut": [f"{c.host}:{c.path}: {c.cut}" for c in copied if c.cut], "not_copied": not_copied}


def _mb(n: int) -> str:
    """A cap as the profile gave it (max_file_mb: 0.001 is 1048 bytes): '0.001 MB'."""
    return f"{math.ceil(n / MB * 1e6) / 1e6:g} MB"


def _write_manifest(evidence_dir: Path, run_id: str, profile: Profile, started: str, file_cap: int, total_cap: int,
                    copied: list[Copied], not_copied: list[str]) -> None:
    lines = [
        f"# acgs-verify security-incident evidence, run {run_id}, profile {profile.name}",
        f"copied_at: {started} (UTC; each file's own time below)",
        "read-only: the hosts' files were read, nothing was written on any host",
        f"caps: {_mb(file_cap)} per file (a longer file keeps its last {_mb(file_cap)}), {_mb(total_cap)} in all",
        "verify: cd evidence && sha256sum -c SHA256SUMS",
        "",
        "# host\tpath\tsource bytes\tsource mtime (UTC)\tbytes copied\tcopied at (UTC)\tsha256\tread by\tcut",
    ]
    for c in copied:
        mtime = datetime.fromtimestamp(c.mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if c.mtime else "-"
        lines.append("\t".join([c.host, c.path, str(c.size), mtime, str(c.copied), c.copied_at, c.sha256,
                                c.read_by, c.cut or "complete"]))
    if not_copied:
        lines += ["", "# not copied"] + [f"- {x}" for x in not_copied]
    manifest = "\n".join(lines) + "\n"
    (evidence_dir / MANIFEST).write_text(manifest)
    sums = [f"{hashlib.sha256(manifest.encode()).hexdigest()}  {MANIFEST}"]
    sums += [f"{c.sha256}  {_relative(c.host, c.path)}" for c in copied]
    (evidence_dir / SUMS).write_text("\n".join(sums) + "\n")
