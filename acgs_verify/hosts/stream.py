"""A remote command's output read as a stream, in chunks, instead of collected whole as testinfra's run() does:
a backup of a GiB crosses the connection in constant memory (HostPool.stream opens one).

>>> with pool.stream(host, command("head", "-c", 1 << 30, "--", "/var/backups/acgs/latest/database.sql.gz")) as s:
...     while chunk := s.read(1 << 21):
...         ...
>>> s.rc, s.stderr
(0, '')

ssh hosts (and Ansible hosts reached over ssh) run `ssh -F CONFIG DEST -- COMMAND` on the pool's own ssh_config,
riding its control master; paramiko hosts open a session channel on the pool's client; a local host runs
`sh -c`. Every read waits at most `timeout` seconds for a byte (a host that stops answering ends the read with
TimeoutError); stderr is kept up to ERR_MAX bytes, drained as it comes so that a chatty command never blocks.
"""

from __future__ import annotations

import contextlib
import select
import subprocess
import threading

ERR_MAX = 1 << 16


class CommandStream:
    """stdout of one command, `read(n)` at a time; `rc` and `stderr` once it is closed."""

    rc: int | None = None
    stderr: str = ""

    def read(self, n: int) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> CommandStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ProcessStream(CommandStream):
    """A local process (ssh, or sh for a local host) whose stdout is the stream."""

    def __init__(self, argv: list[str], timeout: float):
        self.timeout = timeout
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, start_new_session=True)
        self._err = bytearray()
        self._drain = threading.Thread(target=self._read_err, daemon=True)
        self._drain.start()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        while chunk := self.proc.stderr.read1(1 << 14):
            if len(self._err) < ERR_MAX:
                self._err += chunk[: ERR_MAX - len(self._err)]

    def read(self, n: int) -> bytes:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout)
        if not ready:
            raise TimeoutError(f"no byte within {self.timeout:g} s")
        return self.proc.stdout.read1(n)

    def close(self) -> None:
        if self.proc.poll() is None:
            # closing our end first: a command still writing gets SIGPIPE, as `| head` would give it
            with contextlib.suppress(OSError):
                self.proc.stdout.close()
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._drain.join(timeout=2)
        self.rc = self.proc.returncode
        self.stderr = bytes(self._err).decode("utf-8", "replace")
        with contextlib.suppress(OSError):
            self.proc.stdout.close()
        with contextlib.suppress(OSError):
            self.proc.stderr.close()


class ChannelStream(CommandStream):
    """A paramiko session channel whose stdout is the stream."""

    def __init__(self, client, command: str, timeout: float):
        self.chan = client.get_transport().open_session(timeout=timeout)
        self.chan.settimeout(timeout)
        self.chan.exec_command(command)
        self._err = bytearray()

    def read(self, n: int) -> bytes:
        while self.chan.recv_stderr_ready() and len(self._err) < ERR_MAX:  # keep the window open for stdout
            self._err += self.chan.recv_stderr(1 << 14)
        return self.chan.recv(n)  # socket.timeout (a TimeoutError) when the host is silent for `timeout` s

    def close(self) -> None:
        try:
            if self.chan.exit_status_ready():
                while len(self._err) < ERR_MAX and (chunk := self.chan.recv_stderr(1 << 14)):
                    self._err += chunk
                self.rc = self.chan.recv_exit_status()
            else:
                self.rc = None  # stopped early: the command's own status is not what was measured
        finally:
            self.chan.close()
        self.stderr = bytes(self._err[:ERR_MAX]).decode("utf-8", "replace")
