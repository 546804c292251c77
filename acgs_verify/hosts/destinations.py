"""What may reach ssh as a destination: a host's address and login name, checked by one rule for the profile (when
it loads) and for the connection (a Host built without it).

>>> checked_address("-oProxyCommand=touch /tmp/x")
ValueError: must not start with '-' (ssh would read it as an option)
"""

from __future__ import annotations

import re

# A host's address and user reach ssh as its destination and as ssh_config lines, its paths as ssh_config lines:
# a value that starts with `-` is an option there (`-oProxyCommand=...` runs a command), one with a line break
# ends its line and starts a directive of its own. They are refused when the profile loads, not at the first
# connection, so a bad profile stops the run (exit 3) before any host is touched.
_HOST_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*\.?")
_ZONE = re.compile(r"[A-Za-z0-9_.-]+")  # an IPv6 zone (fe80::1%eth0): an interface name or number
_USER_NAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.@-]*\$?")


def control_or_space(v: str, spaces: bool) -> bool:
    """True when `v` holds a control character (C0, DEL, C1), a line or paragraph separator, or (with
    `spaces`) any white space; without it only the plain space is allowed."""
    return any(ord(c) < 32 or 127 <= ord(c) < 160 or (c.isspace() and (spaces or c != " ")) or
               not (c.isprintable() or c == " ") for c in v)


def checked_address(v: str) -> str:
    """A host name (RFC 1123 labels, `_` allowed) or an IP literal (IPv6 bracketed or not, with a %zone)."""
    import ipaddress

    if v.startswith("-"):
        raise ValueError("must not start with '-' (ssh would read it as an option)")
    if control_or_space(v, spaces=True):
        raise ValueError("holds white space or a control character")
    literal = v[1:-1] if v.startswith("[") and v.endswith("]") else v
    ip, _, zone = literal.partition("%")
    try:
        ipaddress.ip_address(ip)
    except ValueError:
        if literal is not v or zone or len(v) > 253 or not _HOST_NAME.fullmatch(v):
            raise ValueError("is not a host name or IP address") from None
        return v
    if zone and not (":" in ip and _ZONE.fullmatch(zone)):
        raise ValueError("is not a host name or IP address (a %zone follows an IPv6 address only)")
    return v


def checked_user(v: str | None) -> str | None:
    """A login name: letters, digits, `_ . @ -`, not first `-` or `@`, and a trailing `$` (machine accounts)."""
    if v is None:
        return v
    if v.startswith("-"):
        raise ValueError("must not start with '-' (ssh would read it as an option)")
    if control_or_space(v, spaces=True):
        raise ValueError("holds white space or a control character")
    if not _USER_NAME.fullmatch(v):
        raise ValueError("is not a user name (letters, digits, _ . @ - and a trailing $)")
    return v
