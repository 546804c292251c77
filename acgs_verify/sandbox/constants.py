"""The sandbox's names, numbers and paths, defined once: components, the service processes and tests read them here.

Standard library only and nothing but values: every service process imports this module at start-up.

>>> from acgs_verify.sandbox.constants import CONSTITUTIONAL_HASH, PRIMARY_PORT, secret_path
>>> secret_path(Path(".sandbox"), "pg-admin")
PosixPath('.sandbox/secrets/pg-admin.password')
"""

from __future__ import annotations

from pathlib import Path

# ------------------------------------------------------------------------------------------------ hashes
CONSTITUTIONAL_HASH = "cdd01ef066bc6cf2"  # what every healthy component names
OTHER_HASH = "badc0ffee0ddf00d"  # what the *-wrong-hash faults write into Redis, a policy and audit rows

# ----------------------------------------------------------------------------------- production ports
# The sandbox listens on each of these plus its port offset (the services' own ports are in service_app.SERVICES).
PRIMARY_PORT = 5432
REPLICA_PORT = 5433
REDIS_PORT = 6379
TLS_PORT = 443
SSH_PORT = 22

# ------------------------------------------------------------------------------ paths under the sandbox dir
# The runbook's absolute paths, relative to DIR, so that the profile reads like production's.
APP_ROOT = "home/acgs/ACGS"
POLICY_DIR = f"{APP_ROOT}/config/policies"
LOG_DIR = "var/log/acgs"
BACKUP_ROOT = "var/backups/acgs"
SSL_DIR = "etc/ssl/acgs"
RUN_DIR = "run"  # pid files, process output, what heal puts back
# the ssh host ops-1's own files (its backup root, certificate and policies), at the same paths below this folder:
# ops-1 is this machine reached over ssh, so what is its alone lives apart from app-1's
OPS_HOST = "ops-1"
OPS_TREE = f"hosts/{OPS_HOST}"
SECRETS_DIR = "secrets"

# --------------------------------------------------------------------------------------------- PostgreSQL
DATABASE = "acgs_production"
ROLE = "acgs"
ADMIN = "postgres"
RESTORE_ROLE = "acgs_restore"  # the restore drill's own credential (BK-07): it may create databases

# ------------------------------------------------------------------------------------------------ secrets
# DIR/secrets/<file>, 0600; `Sandbox.secret(name)` reads one.
SECRET_FILES = {
    "db": "db.password",  # the role acgs ($ACGS_SANDBOX_DB_PASSWORD, or random)
    "pg-admin": "pg-admin.password",  # the superuser postgres: the sandbox's own housekeeping
    "restore": "restore.password",  # the role acgs_restore (BK-07's admin_password_file)
    "redis": "redis.password",  # $ACGS_SANDBOX_REDIS_PASSWORD, or random
    "ca": "ca.key",  # the sandbox CA's private key
}
DB_PASSWORD_ENV = "ACGS_SANDBOX_DB_PASSWORD"
REDIS_PASSWORD_ENV = "ACGS_SANDBOX_REDIS_PASSWORD"


def secret_path(sandbox_dir: Path, name: str) -> Path:
    """DIR/secrets/<file> of one of SECRET_FILES, e.g. secret_path(d, "redis") -> d/secrets/redis.password."""
    try:
        return Path(sandbox_dir) / SECRETS_DIR / SECRET_FILES[name]
    except KeyError:
        raise KeyError(f"no sandbox secret {name!r}; known: {', '.join(SECRET_FILES)}") from None

# how long a started server (a service, sshd, the TLS endpoint) may take to answer: an upper bound, waited out only
# when something is wrong; a Python start on a loaded 2-core machine has taken over 10 s
READY_TIMEOUT = 30.0
