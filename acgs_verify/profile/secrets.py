"""Secrets by reference: a profile names the environment variable or file holding a password, never the value.

>>> secrets = read_secrets(profile, located)     # after the model validated
>>> secrets["databases.primary"].get_secret_value()
's3cret'

A variable that is not set or a file that cannot be read is a ProfileError naming the line of the field that
names it. Values are read here only, and leave as SecretStr, so a repr() of the profile shows none.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import SecretStr

from acgs_verify.probes.bounded import NotReadable, read_regular
from acgs_verify.profile.model import Profile, ProfileError
from acgs_verify.profile.source import Located

MAX_SECRET_FILE_BYTES = 64 << 10  # a password or passphrase file: anything larger is not one

# (list field, owner prefix, env field, file field, what the secret is): every secret a profile may reference
_SECRET_REFS = (
    ("databases", "", "password_env", "password_file", "the password"),
    ("databases", "admin:", "admin_password_env", "admin_password_file", "the restore drill's password"),
    ("redis", "", "password_env", "password_file", "the password"),
    ("hosts", "", "identity_passphrase_env", "identity_passphrase_file", "the ssh key passphrase"),
)


def read_secrets(profile: Profile, located: Located) -> dict[str, SecretStr]:
    """Every secret the profile names, by owner:
    {"databases.primary": ..., "admin:databases.primary": ..., "redis.cache": ..., "hosts.app-1": ...}"""
    out: dict[str, SecretStr] = {}
    for field, prefix, env_field, file_field, what in _SECRET_REFS:
        for i, item in enumerate(getattr(profile, field)):
            owner = f"{prefix}{field}.{item.name}"
            env, file = getattr(item, env_field), getattr(item, file_field)
            if env:
                value = os.environ.get(env)
                if value is None:
                    raise ProfileError(f"{located.at((field, i, env_field))}: environment variable {env} is not"
                                       f" set (it holds {what} for {field} {item.name!r})")
                out[owner] = SecretStr(value)
            elif file:
                p = Path(file).expanduser()
                try:
                    # the profile names the file (a symlink to it is followed); a FIFO or /dev/zero is refused
                    out[owner] = SecretStr(read_regular(p, MAX_SECRET_FILE_BYTES).decode("utf-8").strip())
                except NotReadable as exc:
                    raise ProfileError(
                        f"{located.at((field, i, file_field))}: cannot read secret file {p}: {exc.reason}"
                    ) from None
                except UnicodeDecodeError as exc:  # the reason, never the bytes: they may be the secret
                    raise ProfileError(f"{located.at((field, i, file_field))}: secret file {p} is not UTF-8 "
                                       f"(byte {exc.start})") from None
    return out


