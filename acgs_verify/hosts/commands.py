"""Building a remote command from values: the one way a probe puts a path, unit or file name into a command.

Every value in a remote command comes from a profile or a target: it is data. The code around these functions is
written in this package and holds no value.

>>> command("tail", "-c", 4096, "--", path)
"tail -c 4096 -- '/var/log/acgs/auth service.log'"
>>> conn.run(command("test", "-r", path) + " || " + refuse(f"cannot read {path}"))
"""

from __future__ import annotations

import shlex

from acgs_verify.redact import one_line

# The exit status of a command's own "cannot" message (refuse()): no tool a probe runs exits with it, so a probe
# tells its message (on stderr) from the tool's output, and never reads the message as a measurement.
CANNOT = 90


def command(*words: str | int) -> str:
    """One simple command, each word shell-quoted: `command("tail", "-n", 500, "--", path)`.

    >>> command("systemctl", "is-active", "--", "acgs-auth; touch /tmp/x")
    "systemctl is-active -- 'acgs-auth; touch /tmp/x'"
    """
    return " ".join(shlex.quote(str(w)) for w in words)


def operand(path: str) -> str:
    """A path as a file operand: one that is not absolute gets `./`, so that `-x` (or `-`, which tools read as
    stdin, or find's `(` and `!`) is a file name to every tool, even one that knows no `--` (find)."""
    return path if not path or path.startswith(("/", "./", "../")) else "./" + path


def glob_word(pattern: str) -> str:
    """A path for the shell with every character quoted but the glob characters `*?[]`: /var/log/acgs/*.log."""
    pattern = operand(pattern)
    return "".join(c if c in "*?[]" or c.isalnum() or c in "/._-" else shlex.quote(c) for c in pattern)


def refuse(message: str) -> str:
    """A shell fragment that writes `message` (a value, printf's argument, never its format) as one line on stderr
    and exits CANNOT: `test -r FILE || REFUSE`. The group ends the whole command only outside a pipeline."""
    return f"{{ printf '%s\\n' {shlex.quote(message)} >&2; exit {CANNOT}; }}"


def refused(result) -> str | None:
    """Why a command did not measure: its refuse() message, or whatever it wrote on stderr; None when it ran
    clean. A probe raises on this before it reads stdout."""
    err = result.stderr or ""
    if result.rc == CANNOT or err.strip():
        return one_line(err) or f"exit {result.rc}"
    return None
