"""What may be shown of a secret, a URL or an error: masked, without passwords, on one line.

>>> mask("password=hunter22 rejected", ["hunter22"])
'password=*** rejected'
>>> display_url("postgresql://acgs:hunter22@db-1:5432/acgs")
'postgresql://acgs:***@db-1:5432/acgs'
>>> one_line(OSError("connection refused\\n\\tIs the server running?"))
'connection refused Is the server running?'

>>> printable("\\x1b]0;owned\\x07 done\\r")
'\\\\x1b]0;owned\\\\x07 done\\\\r'

A failure message is read at 3 a.m. in a terminal, a JUnit file and a report cell: one_line (and last_line,
for a command's output whose last line is the error) is the only place that turns an exception or a
command's stderr into the reason a message quotes. Whatever a target says (a /health body, a log line, a file
name, a database or Redis value, a command line) reaches a terminal or a report through printable: shown raw,
an escape sequence sets the reader's window title, clears the screen or writes the clipboard (OSC 52).
Masking always comes first, on the raw text, then normalising, escaping and cutting: a secret with two spaces
or a newline inside is no longer itself once its whitespace has been normalised.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

# the longest reason one_line returns: room for a driver's whole message (psycopg names host, port and the
# server's answer, sometimes for two addresses), short enough that a summary line stays readable
ONE_LINE_MAX = 400


# What a terminal, a Markdown renderer or a browser may act on instead of showing: C0 controls (ESC starts CSI and
# OSC sequences, BEL ends them, CR rewrites the line), DEL, C1 controls (U+009B is a one-character CSI to some
# terminals), the bidi marks, embeddings, overrides and isolates that reorder what is read (U+202E), the line and
# paragraph separators that break a line where no newline shows, the zero-width characters that make two different
# names look the same (U+200B-U+200D, U+2060, U+FEFF), and lone surrogates (a file name that is not
# UTF-8, decoded with surrogateescape), which would stop a UTF-8 writer. A backslash is left alone: a message
# quoting a regex or a Windows path stays readable, and escaping twice changes nothing.
_UNSAFE = ("\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2060\ufeff\u2028\u2029\u202a-\u202e\u2066-\u2069"
           "\ud800-\udfff")
_UNSAFE_IN_TEXT = re.compile(f"[{_UNSAFE}]")  # where the format has lines and tabs: report.md's fences, <pre>
_UNSAFE_IN_LINE = re.compile(f"[\t\n{_UNSAFE}]")  # everywhere else: a message, a table cell, a label, a terminal line
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
# the escapes printable writes, so that a cut does not leave half of one behind
_AN_ESCAPE = re.compile(r"\\(?:x[0-9a-f]{2}|u[0-9a-f]{4}|[tnr])")


def _visible(m: re.Match) -> str:
    ch = m.group()
    code = ord(ch)
    return _NAMED.get(ch) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(text: object, multiline: bool = False) -> str:
    r"""text with every character a terminal or renderer would act on shown as an escape: `\x1b`, `\x9b`, `\u202e`,
    `\r`. A newline and a tab are kept only with multiline=True (evidence in a fence or a <pre>), else shown as
    `\n` and `\t`. Applying it twice changes nothing.

    >>> printable("a\tb\nc\x9b"), printable("a\tb\nc\x9b", multiline=True)
    ('a\\tb\\nc\\x9b', 'a\tb\nc\\x9b')
    """
    return (_UNSAFE_IN_TEXT if multiline else _UNSAFE_IN_LINE).sub(_visible, str(text))


def _flat(text: str) -> str:
    return " ".join(text.split())


def secret_forms(secret: str) -> set[str]:
    """A secret as a text may hold it by the time it is masked: as is, whitespace-normalised (`Hunter  two` is
    `Hunter two` in a one-line message), and escaped by printable (a tab or a control character inside)."""
    flat = _flat(secret)
    return {secret, flat, printable(secret), printable(secret, multiline=True), printable(flat)}


def mask(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret value in text with '***', in each of the forms it may have taken (secret_forms).

    >>> mask("login Hunter two", ["Hunter  two"])
    'login ***'
    """
    forms = {f for s in set(secrets) if s and len(s) >= 3 for f in secret_forms(s) if len(f) >= 3}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "***")
    return text


def cut(text: str, limit: int) -> str:
    r"""text cut to `limit` characters, before an escape that the limit would split (`\x1` shows nothing)."""
    if len(text) <= limit:
        return text
    for m in _AN_ESCAPE.finditer(text, max(0, limit - 5), limit + 5):
        if m.start() < limit < m.end():
            return text[: m.start()]
    return text[:limit]


def shown(text: object, secrets: Iterable[str] = (), limit: int | None = None, multiline: bool = False) -> str:
    r"""Any text a target said, as a report or a terminal may show it: masked (raw, then once normalised), then
    escaped (printable), then cut to `limit`. one_line is this for an error's reason.

    >>> shown("pw Hunter  two\x1b[2J", ["Hunter  two"])
    'pw ***\\x1b[2J'
    """
    secrets = list(secrets)
    text = mask(str(text), secrets)
    if not multiline:
        text = mask(_flat(text), secrets)
    text = printable(text, multiline)
    return text if limit is None else cut(text, limit)


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
    secrets = list(secrets)  # read for every text below
    # masked on the raw text first: normalised, a secret with two spaces or a newline inside is no longer itself
    if isinstance(exc, str):
        text = shown(exc, secrets)
    else:
        text, cause, seen = shown(exc, secrets), exc.__cause__ or exc.__context__, {id(exc)}
        # wrappers (httpx over httpcore, say) may carry no text of their own where the error they wrap does
        while not text and cause is not None and id(cause) not in seen:
            seen.add(id(cause))
            text, cause = shown(cause, secrets), cause.__cause__ or cause.__context__
        text = text or type(exc).__name__
    # masked before it is cut, so a secret cut in half cannot show its first half
    return cut(text, limit)


def last_line(text: str | None, secrets: Iterable[str] = (), default: str = "", limit: int = ONE_LINE_MAX) -> str:
    """The last non-blank line of a command's output as one_line: where psql, pg_restore and ansible-inventory
    put the error itself, after warnings and context lines; `default` when the output holds nothing.

    >>> last_line("WARNING: errors ignored on restore\\npg_restore: error: could not read input file\\n")
    'pg_restore: error: could not read input file'
    >>> last_line("", default="(no message)")
    '(no message)'
    """
    secrets = list(secrets)
    # masked before it is split: a secret with a newline inside would otherwise leave its last line behind
    lines = [ln for ln in mask(text or "", secrets).splitlines() if ln.strip()]
    return one_line(lines[-1], secrets, limit) if lines else default
