"""Small files read whole by Python, never blocking and never without a cap: certificates, password files, policies.

>>> read_regular("/etc/ssl/acgs/cert.pem", 1 << 20)        # the bytes, at most the cap
b'-----BEGIN CERTIFICATE-----...'
>>> read_regular("/run/acgs/fifo", 1 << 20)
NotReadable: cannot read /run/acgs/fifo: a FIFO, not a regular file

The file is opened with O_NONBLOCK (opening a FIFO for reading would otherwise wait for a writer forever) and
checked with fstat on the descriptor that is then read, so what is read is what was checked: only a regular file
is read (a FIFO, a device such as /dev/zero, a socket or a directory is refused), and only up to the cap. A symlink
is followed only when the caller says the path was named by the profile (`follow=True`): the profile's author
chose that name; a file found by walking a directory is opened with O_NOFOLLOW.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from acgs_verify.errors import ProbeError

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class NotReadable(ProbeError):
    """What read_regular refused or could not read; `reason` is the part after the path, for callers that name
    the file their own way (a profile field)."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"cannot read {path}: {reason}")
        self.path, self.reason = str(path), reason


def kind_of(mode: int) -> str:
    """'a FIFO', 'a character device', ... for a mode that is not a regular file's."""
    return next((name for test, name in _KINDS if test(mode)), "a special file")


def open_regular(path: str | Path, follow: bool = True) -> tuple[int, os.stat_result]:
    """A descriptor open for reading on the regular file `path`, and its fstat; NotReadable (a ProbeError) with one
    line otherwise. For files too large to read whole (a backup's dump), read as a stream by the caller, who
    closes the descriptor and keeps to a budget: the size returned here, and a time.

    >>> fd, st = open_regular(".../20250701_020000/database.sql.gz")
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == getattr(os, "ELOOP", 40) and not follow:
            raise NotReadable(path, "a symlink, not followed") from None
        raise NotReadable(path, exc.strerror or str(exc)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotReadable(path, f"{kind_of(st.st_mode)}, not a regular file")
    except BaseException as exc:
        os.close(fd)
        if isinstance(exc, OSError):
            raise NotReadable(path, exc.strerror or str(exc)) from None
        raise
    return fd, st


def read_regular(path: str | Path, limit: int, follow: bool = True) -> bytes:
    """The bytes of the regular file `path` if it holds at most `limit` of them; NotReadable (a ProbeError) with
    one line otherwise. Never blocks on a FIFO or device, never reads more than limit + 1 bytes."""
    fd, st = open_regular(path, follow)
    try:
        if st.st_size > limit:
            raise NotReadable(path, f"larger than {size_text(limit)} ({size_text(st.st_size)})")
        chunks, got = [], 0
        while got <= limit:  # a file that grows while it is read still stops at the cap
            chunk = os.read(fd, limit + 1 - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    except OSError as exc:
        raise NotReadable(path, exc.strerror or str(exc)) from None
    finally:
        os.close(fd)
    if got > limit:
        raise NotReadable(path, f"larger than {size_text(limit)} (it grew while it was read)")
    return b"".join(chunks)


def size_text(n: int) -> str:
    """1024 -> '1 KiB', 16777216 -> '16 MiB', 50 -> '50 bytes'."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):.3g} {unit}"
    return f"{n} bytes"
