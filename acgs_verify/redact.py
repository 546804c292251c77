"""What may be shown of a secret, a URL or an error: masked, without passwords, on one line.

>>> mask("password=hunter22 rejected", ["hunter22"])
'password=*** rejected'
>>> display_url("postgresql://acgs:hunter22@db-1:5432/acgs")
'postgresql://acgs:***@db-1:5432/acgs'
>>> one_line(OSError("connection refused\\n\\tIs the server running?"))
'connection refused Is the server running?'

A failure message is read at 3 a.m. in a terminal, a JUnit file and a report cell: one_line (and last_line,
for a command's output whose last line is the error) is the only place that turns an exception or a
command's stderr into the reason a message quotes.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

# the longest reason one_line returns: room for a driver's whole message (psycopg names host, port and the
# server's answer, sometimes for two addresses), short enough that a summary line stays readable
ONE_LINE_MAX = 400


def mask(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret value in text with '***'."""
    for s in sorted(set(secrets), key=len, reverse=True):
        if s and len(s) >= 3:
            text = text.replace(s, "***")
    return text


def display_url(url: str) -> str:
    """A DSN or URL as it may be shown: any password replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = netloc[0].split(":", 1)[0] + ":***"
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{netloc[1]}"))


def one_line(exc: BaseException | str, secrets: Iterable[str] = (), limit: int = ONE_LINE_MAX) -> str:
    """An exception (or a text such as a command's whole stderr) as one masked line of at most `limit` characters.

    >>> one_line(ValueError("bad\\n  value"))
    'bad value'
    >>> one_line(TimeoutError())          # no message: the message of its cause, else the exception's type
    'TimeoutError'
    >>> one_line(RuntimeError("login as acgs:s3cret failed"), ["s3cret"])
    'login as acgs:*** failed'
    """
    if isinstance(exc, str):
        text = " ".join(exc.split())
    else:
        text, cause, seen = " ".join(str(exc).split()), exc.__cause__ or exc.__context__, {id(exc)}
        # wrappers (httpx over httpcore, say) may carry no text of their own where the error they wrap does
        while not text and cause is not None and id(cause) not in seen:
            seen.add(id(cause))
            text, cause = " ".join(str(cause).split()), cause.__cause__ or cause.__context__
        text = text or type(exc).__name__
    # masked before it is cut, so a secret cut in half cannot show its first half
    return mask(text, secrets)[:limit]


def last_line(text: str | None, secrets: Iterable[str] = (), default: str = "", limit: int = ONE_LINE_MAX) -> str:
    """The last non-blank line of a command's output as one_line: where psql, pg_restore and ansible-inventory
    put the error itself, after warnings and context lines; `default` when the output holds nothing.

    >>> last_line("WARNING: errors ignored on restore\\npg_restore: error: could not read input file\\n")
    'pg_restore: error: could not read input file'
    >>> last_line("", default="(no message)")
    '(no message)'
    """
    lines = [ln for ln in (text or "").splitlines() if ln.strip()]
    return one_line(lines[-1], secrets, limit) if lines else default
