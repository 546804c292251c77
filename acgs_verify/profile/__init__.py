"""Environment profiles: the YAML model, `extends:` inheritance, secrets by reference, --set overrides.

>>> profile = load_profile("sandbox", overrides=["thresholds.db_long_query_seconds=60"])
>>> profile.thresholds.db_long_query_seconds
60.0

One module per job:
  model.py      the pydantic model; every field is documented there (what `acgs-verify` users read)
  source.py     the hardened YAML reader with the line of every key (profiles and waiver files use it)
  loader.py     load_profile: find, extends:, ${VAR}, --set, validate, secrets
  overrides.py  --set dotted.key=VALUE
  secrets.py    password_env / password_file, read into SecretStr
A bad profile raises ProfileError, whose str() is one line naming the file, the line and the field.
"""

from acgs_verify.profile.loader import available_profiles, find_profile, load_profile, profile_dirs
from acgs_verify.profile.model import (
    HASH_RE,
    MAX_CENTURY,
    MAX_NUMBER,
    PATH_NAME_RE,
    TARGET_FIELDS,
    Backups,
    Database,
    Host,
    Key,
    Paths,
    Policies,
    Profile,
    ProfileError,
    Redis,
    Security,
    Service,
    Thresholds,
    Tls,
)
from acgs_verify.profile.overrides import apply_overrides, parse_override
from acgs_verify.profile.secrets import read_secrets
from acgs_verify.profile.source import MAX_DEPTH, MAX_EXPANDED_NODES, MAX_PROFILE_BYTES, SourceError

# mask and display_url lived here before acgs_verify.redact; kept so older imports still work
from acgs_verify.redact import display_url, mask

__all__ = [
    "HASH_RE", "MAX_CENTURY", "MAX_DEPTH", "MAX_EXPANDED_NODES", "MAX_NUMBER", "MAX_PROFILE_BYTES", "PATH_NAME_RE",
    "TARGET_FIELDS", "Backups", "Database", "Host", "Key", "Paths", "Policies", "Profile", "ProfileError", "Redis",
    "Security", "Service", "SourceError", "Thresholds", "Tls", "apply_overrides", "available_profiles",
    "display_url", "find_profile", "load_profile", "mask", "parse_override", "profile_dirs", "read_secrets",
]
