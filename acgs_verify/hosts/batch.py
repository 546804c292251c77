"""Many reads of one host in one remote command: the read-ahead's batch (HostPool.read_ahead).

The first host of a kind is measured through a Recorder, which notes the commands each read runs; every later host
of that kind gets those commands in one remote shell command (run_batch), and each read then runs against a Replay
of the outputs. A command the batch did not hold, or one that failed there, runs on the host as usual.

>>> outputs = run_batch(conn, ["id -un", "cut -d: -f1 -- /etc/passwd"])
>>> read_accounts(Replay(conn, outputs), "/etc/passwd")   # no round trip: answered from the batch
"""

from __future__ import annotations

import re
import secrets
from typing import Any


class Recorder:
    """A testinfra host that runs commands as usual and notes each (command, args): the plan's first host."""

    def __init__(self, conn):
        self._conn, self.commands = conn, []

    def run(self, command: str, *args: Any, **kwargs: Any):
        self.commands.append((command, args))
        return self._conn.run(command, *args, **kwargs)

    def check_output(self, command: str, *args: Any, **kwargs: Any) -> str:
        self.commands.append((command, args))
        return self._conn.check_output(command, *args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self._conn, name)


class Replay:
    """A testinfra host whose commands are answered from a batch's outputs when the batch holds them (exit 0,
    nothing on stderr), and run on the host otherwise."""

    def __init__(self, conn, outputs: dict[str, Any]):
        self._conn, self._outputs = conn, outputs

    def run(self, command: str, *args: Any, **kwargs: Any):
        found = self._outputs.get(self._conn.backend.get_command(command, *args))
        return found if found is not None else self._conn.run(command, *args, **kwargs)

    def check_output(self, command: str, *args: Any, **kwargs: Any) -> str:
        res = self.run(command, *args, **kwargs)
        if res.rc != 0:  # as testinfra's run_expect([0], ...)
            raise AssertionError(f"Unexpected exit code {res.rc} for {res}")
        return res.stdout.rstrip("\r\n")

    def __getattr__(self, name: str):
        return getattr(self._conn, name)


def run_batch(conn, commands: list[str]) -> dict[str, Any]:
    """Run `commands` in one remote shell command; {command: its result} for those that exited 0 with nothing on
    stderr (the others are left out, to be run alone). Each command's stdout goes to the shell's stdout between
    marker lines holding a random token, its stderr into a variable whose length is reported: POSIX sh, nothing
    written on the host.

    >>> run_batch(conn, ["id -un", "cut -d: -f1 -- /etc/passwd"])
    {'id -un': CommandResult(rc=0, stdout='acgs\n'), 'cut -d: -f1 -- /etc/passwd': CommandResult(...)}
    """
    token = f"@@acgs-{secrets.token_hex(16)}"
    parts = ["exec 3>&1"]
    for i, cmd in enumerate(commands):
        parts.append(f"printf '\\n%s begin {i}\\n' {token}; __e=$( {{ {cmd}\n}} 2>&1 >&3 3>&- ); __r=$?; "
                     f"printf '\\n%s end {i} %s %s\\n' {token} \"$__r\" \"${{#__e}}\"")
    res = conn.run("\n".join(parts))
    out: dict[str, Any] = {}
    raw = res.stdout_bytes
    for i, cmd in enumerate(commands):
        begin = f"\n{token} begin {i}\n".encode()
        end = re.compile(rb"\n" + token.encode() + rb" end " + str(i).encode() + rb" (\d+) (\d+)\n")
        b = raw.find(begin)
        m = end.search(raw, b + len(begin)) if b >= 0 else None
        if m is None:
            continue
        rc, stderr_len = int(m.group(1)), int(m.group(2))
        if rc == 0 and stderr_len == 0:
            out[cmd] = conn.backend.result(0, cmd.encode(), raw[b + len(begin): m.start()], b"")
    return out

