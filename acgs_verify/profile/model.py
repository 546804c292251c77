"""The profile model: every field a profile may hold, its default and what it means.

>>> Profile.model_validate({"services": [{"name": "auth", "port": 8016}]}).services[0].health_path
'/health'

This module is what `acgs-verify` users read to write a profile: each field says what it is for and which
check reads it. Loading (files, extends:, --set, secrets) is in loader.py; this module reads no file.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from acgs_verify.hosts.destinations import checked_address, checked_user, control_or_space
from acgs_verify.profile.source import WITHHELD, SourceError

# No limit, count or duration a profile holds comes near this; past it a number is a typo (1e400 is inf) that
# would make a timeout that never fires or a date computation that overflows
MAX_NUMBER = 1e9
# a duration in these units beyond a century is a typo too (and `now - timedelta(days=1e9)` raises)
MAX_CENTURY = {"_days": 36_500, "_hours": 876_000, "_minutes": 52_560_000}
# names that become parts of paths (the run directory is <time>-<profile name>-<gate>-<random>)
PATH_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}")
# a profile must name at least one of these, or it would check this machine at the runbook's production paths
TARGET_FIELDS = ("hosts", "inventory", "services", "databases", "redis", "certificates", "tls_endpoints")
HASH_RE = r"^[0-9a-f]{16}$"


class ProfileError(SourceError):
    """Bad input in a profile or an override; str() is the one line a user sees."""


# --------------------------------------------------------------------------------------------- DSNs and URLs

# Every problem with a DSN or URL field is a WITHHELD error, whose message never quotes the value (source.py's
# validation_line leaves out "(got ...)" and a --set's value): the value may be refused precisely because it holds
# a password, or may hold one where a parser that gave up could not see it.
_HOLDS_PASSWORD = "holds a password; use password_env or password_file"
# a user-info with a ':' or one of these before its '@' is a password that a parser may split elsewhere
# (postgresql://acgs:pa/ss@db: libpq takes "acgs:pa" for a host and "ss@db" for a database name)
_USERINFO_BREAKS = re.compile(r"[:/?#\[\]\s\"'\\]")


def _withheld(message: str) -> PydanticCustomError:
    return PydanticCustomError(WITHHELD, message)


def _userinfo_parses(rest: str) -> bool:
    """`rest` is a URL after `scheme://`: false when an '@' follows a user-info that is not a plain user name."""
    if "@" not in rest:
        return True
    return not _USERINFO_BREAKS.search(rest.split("@", 1)[0])


# URLs of the plainest form, `scheme://[USER@]HOST[:PORT][/NAME]` in letters, digits, '.', '_' and '-', which
# libpq and redis-py both read as written, without a password: accepted without importing psycopg (~80 ms) or
# redis-py (~100 ms) for a run whose checks never connect to either. Anything else is read by the library itself.
# (tests/test_profile_urls.py: every URL this accepts, the library's reading accepts too.)
_PLAIN_NAME = r"[A-Za-z0-9_][A-Za-z0-9_.-]*"
_PLAIN_URL = {
    "postgres": re.compile(rf"postgres(?:ql)?://(?:{_PLAIN_NAME}@)?[A-Za-z0-9][A-Za-z0-9.-]*(?::([0-9]{{1,5}}))?"
                           rf"(?:/{_PLAIN_NAME})?"),
    "redis": re.compile(rf"rediss?://(?:{_PLAIN_NAME}@)?[A-Za-z0-9][A-Za-z0-9.-]*(?::([0-9]{{1,5}}))?(?:/[0-9]{{1,5}})?"),
}


def _plain(kind: str, v: str) -> bool:
    m = _PLAIN_URL[kind].fullmatch(v)
    return m is not None and int(m.group(1) or 0) <= 65535


def checked_postgres_url(v: str) -> str:
    """A DSN as libpq itself reads it (psycopg's conninfo_to_dict): a postgresql:// URL without a password in its
    user-info, its query (?password=) or after ${VAR} expansion; no part of `v` is ever put in the error."""
    return v if _plain("postgres", v) else read_postgres_url(v)


def read_postgres_url(v: str) -> str:
    """checked_postgres_url, by libpq's own reading."""
    from psycopg.conninfo import conninfo_to_dict

    scheme, sep, rest = v.partition("://")
    wrong_scheme = _withheld("must be a postgresql:// URL (postgresql://USER@HOST:PORT/DBNAME)")
    if sep and scheme not in ("postgresql", "postgres"):
        raise wrong_scheme
    try:
        params = conninfo_to_dict(v)
    except Exception:  # noqa: BLE001 (libpq's message, or a decoding error's, quotes the part it could not read)
        raise _withheld("does not parse as a libpq connection string (value not shown: it may hold a password); "
                        "write postgresql://USER@HOST:PORT/DBNAME") from None
    if params.get("password") or params.get("sslpassword"):
        raise _withheld(_HOLDS_PASSWORD)
    if not sep:  # key=value conninfo: the rest of the suite reads URLs
        raise wrong_scheme
    if not _userinfo_parses(rest):
        raise _withheld("its user-info does not parse (a password with characters that are not percent-encoded?);"
                        " write USER@HOST and use password_env or password_file")
    if not str(params.get("port", "5432")).replace(",", "").isdigit():
        raise _withheld("its port is not a number")
    return v


def checked_redis_url(v: str) -> str:
    """A Redis URL as redis-py reads it (redis.connection.parse_url): redis:// or rediss://, without a password in
    its user-info or its query; no part of `v` is ever put in the error."""
    return v if _plain("redis", v) else read_redis_url(v)


def read_redis_url(v: str) -> str:
    """checked_redis_url, by redis-py's own reading."""
    from redis.connection import parse_url

    scheme, sep, rest = v.partition("://")
    if not sep or scheme not in ("redis", "rediss"):
        raise _withheld("must be a redis:// or rediss:// URL (redis://HOST:PORT/DB)")
    try:
        params = parse_url(v)
    except Exception:  # noqa: BLE001 (redis-py's message quotes the part it could not read, a password's start)
        raise _withheld("does not parse as a Redis URL (value not shown: it may hold a password); "
                        "write redis://HOST:PORT/DB") from None
    if params.get("password"):
        raise _withheld(_HOLDS_PASSWORD)
    if not _userinfo_parses(rest):
        raise _withheld("its user-info does not parse (a password with characters that are not percent-encoded?);"
                        " write HOST:PORT/DB and use password_env or password_file")
    return v


PostgresUrl = Annotated[str, AfterValidator(checked_postgres_url)]
RedisUrl = Annotated[str, AfterValidator(checked_redis_url)]


# --------------------------------------------------------------------------------------------- model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*")
    @classmethod
    def _sane_number(cls, v: Any, info: Any) -> Any:  # info: pydantic's ValidationInfo
        if isinstance(v, bool) or not isinstance(v, int | float):
            return v
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        if abs(v) > MAX_NUMBER:
            raise ValueError(f"must be at most {MAX_NUMBER:g}")
        for unit, limit in MAX_CENTURY.items():
            if (info.field_name or "").endswith(unit) and abs(v) > limit:
                raise ValueError(f"must be at most {limit:g} (a century)")
        return v


class _RunbookThresholds(_Strict):
    """Named limits (docs/checks.md, 'Threshold keys'); each can be set per profile or with --set."""

    health_timeout_seconds: float = Field(2, gt=0)
    latency_samples: int = Field(20, ge=1, le=10_000)
    latency_p99_fail_ms: float = Field(100, gt=0)
    latency_p99_warn_ms: float = Field(5, gt=0)
    error_rate_max_percent: float = Field(0.1, ge=0, le=100)
    db_connect_timeout_seconds: float = Field(5, gt=0)
    db_connections_max_percent: float = Field(80, gt=0, le=100)
    db_long_query_seconds: float = Field(300, gt=0)
    db_blocked_locks_max: int = Field(0, ge=0)
    db_statement_mean_ms_max: float = Field(100, gt=0)
    db_replication_lag_seconds_max: float = Field(30, ge=0)
    db_cache_hit_percent_min: float = Field(99, ge=0, le=100)
    db_stats_max_age_days: float = Field(7, gt=0)
    audit_retention_days: float = Field(90, gt=0)
    redis_timeout_seconds: float = Field(1, gt=0)
    redis_latency_p99_ms_max: float = Field(5, gt=0)
    redis_hit_rate_percent_min: float = Field(85, ge=0, le=100)
    redis_hit_rate_min_lookups: int = Field(1000, ge=0)
    log_tail_lines: int = Field(5000, ge=1, le=1_000_000)
    compliance_rate_percent_min: float = Field(95, ge=0, le=100)
    compliance_rate_percent_target: float = Field(99, ge=0, le=100)
    load_1m_max: float = Field(8, gt=0)
    cpu_percent_max: float = Field(80, gt=0, le=100)
    memory_percent_max: float = Field(85, gt=0, le=100)
    disk_percent_max: float = Field(90, gt=0, le=100)
    backup_max_age_hours: float = Field(26, gt=0)
    backup_retention_days: float = Field(30, gt=0)
    backup_min_count: int = Field(7, ge=0)
    backup_min_size_ratio: float = Field(0.5, ge=0, le=1)
    cert_warn_days: float = Field(30, ge=0)
    cert_fail_days: float = Field(7, ge=0)
    failed_logins_max: int = Field(10, ge=0)
    app_key_max_age_days: float = Field(31, gt=0)
    db_credential_max_age_days: float = Field(92, gt=0)
    alert_window_minutes: float = Field(15, gt=0)
    service_rss_mb_max: float = Field(1024, gt=0)
    service_mem_percent_max: float = Field(25, gt=0, le=100)
    baseline_runs: int = Field(5, ge=1)
    baseline_factor_max: float = Field(5, gt=1)
    db_dead_tuple_percent_max: float = Field(20, ge=0, le=100)
    db_bloat_min_rows: int = Field(10_000, ge=0)
    db_idle_in_transaction_seconds_max: float = Field(60, ge=0)
    network_samples: int = Field(10, ge=1, le=1000)
    network_p99_fail_ms: float = Field(10, gt=0)
    network_p99_warn_ms: float = Field(2, gt=0)
    # a latency difference smaller than this is noise, not a finding: SVC-06 and SYS-06 warn only when p99 is this
    # much above their target, and the post-maintenance gate counts a latency check's regression only when its
    # p99 grew both baseline_factor_max times and by this much (gates.regressions_held_open)
    latency_noise_floor_ms: float = Field(1, ge=0)
    availability_percent_min: float = Field(99.9, ge=0, le=100)
    availability_window_days: float = Field(30, gt=0)
    availability_min_runs: int = Field(20, ge=1)
    # not in the catalog's table, but every probe needs one: how long a host or socket gets to answer
    connect_timeout_seconds: float = Field(3, gt=0)
    # not in the catalog either: the statement_timeout of every database session the checks open, so no
    # check's query can run on (or hold a lock) past it
    db_statement_timeout_seconds: float = Field(15, gt=0)


def _with_declared_limits() -> type[_RunbookThresholds]:
    """Thresholds: the runbook's limits above plus those a check's catalog record declares (catalog.Limit), so a
    new check with a limit of its own is its function and its record, and a profile or --set names it as any
    other."""
    from pydantic import create_model

    from acgs_verify.catalog import LIMITS

    clash = sorted(set(LIMITS) & set(_RunbookThresholds.model_fields))
    if clash:
        raise ValueError(f"catalog records declare thresholds that profile/model.py already has: {clash}")
    fields: dict[str, Any] = {
        name: (int if isinstance(limit.default, int) else float,
               Field(limit.default, ge=limit.ge, gt=limit.gt, le=limit.le, description=limit.doc))
        for name, limit in LIMITS.items()}
    return create_model("Thresholds", __base__=_RunbookThresholds, __module__=__name__,
                        __doc__=_RunbookThresholds.__doc__, **fields)


Thresholds = _with_declared_limits()


# --------------------------------------------------------------------------------------------- ssh fields

def checked_ssh_path(v: str | None) -> str | None:
    """A path written as one ssh_config value: not `-...`, no control character, no white space but the plain
    space (which the generated ssh_config quotes), no `"` (which an ssh_config line cannot hold)."""
    if v is None:
        return v
    if v.startswith("-"):
        raise ValueError("must not start with '-'; write ./-name for a relative path")
    if control_or_space(v, spaces=False):
        raise ValueError("holds a line break, tab or other control character")
    if '"' in v:
        raise ValueError("holds a double quote, which an ssh_config line cannot hold")
    if not v:
        raise ValueError("is empty; leave it out instead")
    return v


class Host(_Strict):
    """A machine that checks run on. `backend` picks how testinfra reaches it: `local` (this machine), `ssh`
    (OpenSSH, one multiplexed connection per host), `paramiko`, or `ansible` (hosts from the profile's
    `inventory`, connection settings from the inventory's variables).

    ssh and paramiko check the host key against `known_hosts` (default ~/.ssh/known_hosts) unless
    `strict_host_key_checking` is false. `identity_file` names the key; without one, ssh uses the agent.
    `ssh_config` is read after the profile's own fields (ProxyJump for bastions goes there; ssh backend only).
    `mounts` are the filesystems SYS-04 checks with df.

    `address` is a host name or an IP address, `user` a login name; neither starts with `-` nor holds white
    space. `identity_file`, `known_hosts` and `ssh_config` do not start with `-` and hold no control character
    or `"`. Each reaches ssh as an argument or an ssh_config line, so a profile breaking this is refused when it
    loads (exit 3), before any host is reached.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")  # the host half of target ids (auth@app-1)
    address: str = "127.0.0.1"  # where ssh/paramiko connect; a name or an IP address
    backend: Literal["local", "ssh", "paramiko", "ansible"] = "local"
    # what runs here: each service, database and cache is checked on the hosts that have its `role`
    roles: list[str] = ["app", "db", "cache"]
    user: str | None = None  # the login user; None: ssh's default (ssh_config, then the local user)
    port: int | None = Field(None, ge=1, le=65535)  # the ssh port; None: ssh's default (22 or ssh_config's)
    identity_file: str | None = None  # the private key; None: the ssh agent
    known_hosts: str | None = None  # None: ~/.ssh/known_hosts
    ssh_config: str | None = None  # an ssh_config file read after the fields above (ProxyJump ...)
    # host keys are checked unless a profile says otherwise, and then the run prints a warning
    strict_host_key_checking: bool = True
    # the passphrase of identity_file, for the paramiko backend (OpenSSH in batch mode takes one only from an
    # agent: load the key with ssh-add instead). Like every secret, named here, never written here.
    identity_passphrase_env: str | None = None
    identity_passphrase_file: str | None = None

    @field_validator("address")
    @classmethod
    def _address_is_a_destination(cls, v: str) -> str:
        return checked_address(v)

    @field_validator("user")
    @classmethod
    def _user_is_a_name(cls, v: str | None) -> str | None:
        return checked_user(v)

    @field_validator("identity_file", "known_hosts", "ssh_config")
    @classmethod
    def _path_is_one_value(cls, v: str | None) -> str | None:
        return checked_ssh_path(v)

    @model_validator(mode="after")
    def _passphrase_needs_paramiko(self):
        if (self.identity_passphrase_env or self.identity_passphrase_file) and self.backend != "paramiko":
            raise ValueError(f"an identity passphrase works with backend paramiko, not {self.backend}"
                             " (for ssh, load the key into ssh-agent)")
        return self
    # None: find out from the host (/run/systemd/system); False: the host has no systemd
    systemd: bool | None = None
    # run the few host commands that need privileges through `sudo -n` (never prompts): `ss -p` to see which
    # process owns another user's port (SVC-03, DB-02), a postmaster's cwd and PG_VERSION. Without it an
    # unprivileged checker says which owner it could not see and falls back, by name, to the process pattern.
    become: bool = False
    mounts: list[str] = ["/"]


class Service(_Strict):
    """An ACGS service, on every host with its `role`."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")  # the service half of target ids (auth@app-1)
    role: str = "app"  # checked on every host whose roles include this
    port: int = Field(ge=1, le=65535)  # the port it listens on (SVC-04), which its process must own (SVC-03)
    scheme: Literal["http", "https"] = "http"
    health_path: str = "/health"  # SVC-01, SVC-02, SVC-06, SVC-08
    ready_path: str | None = None  # SVC-09 asks it when set
    live_path: str | None = None  # SVC-09 asks it when set
    metrics_path: str | None = None  # SVC-10 reads it as Prometheus text; SVC-07 falls back to it for error rates
    # a gauge on metrics_path holding the compliance rate (0..1) of recent governance decisions, e.g.
    # acgs_constitutional_compliance; CC-04 reads it where it is named
    compliance_metric: str | None = None
    # regex over the full command line (ps -eo args) of the process that owns `port`: it confirms the owner, and
    # counts alone only where the owner is hidden from the checker (then SVC-03 says so and warns)
    process: str | None = None
    unit: str | None = None  # the systemd unit SVC-05 checks where the host runs systemd; None: SVC-05 skips
    log: str | None = None  # the service's log: SVC-07 counts 5xx request lines in its tail
    # accepted for the record but read by no check: probes/logs.py recognises each line as JSON or plain by itself
    log_format: Literal["auto", "plain", "json"] = "auto"

    @field_validator("process")
    @classmethod
    def _regex_compiles(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return v

    def url_on(self, address: str, path: str) -> str:
        """Where this service answers on a host: `auth.url_on("::1", "/health")` -> 'http://[::1]:8016/health' (an
        IPv6 address in brackets). The one place a service's URL is made: targets, next steps and probes ask it."""
        address = f"[{address}]" if ":" in address else address
        return f"{self.scheme}://{address}:{self.port}{path}"


class _SecretRef(_Strict):
    """Secrets are never in a profile: a field names the environment variable or the file holding one."""

    password_env: str | None = None
    password_file: str | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if self.password_env and self.password_file:
            raise ValueError("give password_env or password_file, not both")
        return self


class Database(_SecretRef):
    """A PostgreSQL database (a primary). The DSN carries no password: see password_env / password_file. libpq's
    own parser reads every DSN here (dsn, replicas, admin_dsn); one holding a password (in its user-info, as
    ?password=, or once ${VAR} is expanded), or that libpq cannot read, is refused naming its line, never its value.

    The checks connect as the DSN's user with a read-only session (default_transaction_read_only,
    statement_timeout, lock_timeout, application_name=acgs-verify). DB-04/DB-05 see other sessions' query
    text only if that role may (superuser or a member of pg_read_all_stats).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")  # the database half of target ids (primary@db-1)
    role: str = "db"  # the hosts with this role run its server (DB-02 looks for it there)
    dsn: PostgresUrl  # postgresql://USER@HOST:PORT/DBNAME, without a password
    # DB-02: the systemd unit (checked where the host runs systemd) and a regex over the command line (ps -eo args)
    # of the server that owns the DSN's port on the database's host; None leaves that half out
    unit: str | None = "postgresql"
    process: str | None = r"postgres"
    # streaming replicas of this primary, as DSNs without a password (same role and secret as `dsn`):
    # DB-07 asks each one how far its replay is behind, besides reading pg_stat_replication on the primary
    replicas: list[PostgresUrl] = []
    # the audit table (CC-04, CC-05, DB-10); None: this database holds none
    audit_table: str | None = "audit_logs"
    # CC-04: rows of this event_type within compliance_window_hours are governance decisions, and
    # event_data->>compliance_field says whether each one complied (true/false)
    decision_event_type: str = "governance_decision"
    compliance_field: str = Field("compliant", pattern=r"^[A-Za-z0-9_]+$")
    compliance_window_hours: float = Field(24, gt=0)
    # CC-05 walks the hash chain of the most recent rows, newest first, up to this many
    audit_chain_rows: int = Field(100_000, ge=2)
    # DB-13: the pool size of each application that connects (pg_stat_activity.application_name -> most
    # connections it may hold, e.g. {acgs-auth-service: 20}); applications not named here are counted, not judged
    pools: dict[str, int] = {}
    # credential (DSN + secret) allowed to CREATE DATABASE (and CREATE ROLE: the restore then runs as a scratch
    # role of least privilege), for the opt-in restore drill only
    admin_dsn: PostgresUrl | None = None
    admin_password_env: str | None = None
    admin_password_file: str | None = None



class Redis(_SecretRef):
    """A Redis server. The URL carries no password: see password_env / password_file (redis-py's URL parser reads
    it, and a password in its user-info or query is refused like a DSN's). Checks send read commands only (PING,
    INFO, GET)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")  # the cache half of target ids
    role: str = "cache"  # the hosts with this role run it
    url: RedisUrl  # redis://HOST:PORT/DB or rediss://, without a password
    # CC-06: the key that must hold the constitutional hash; None: this cache holds none
    hash_key: str | None = "acgs:constitutional_hash"


class Paths(_Strict):
    """Paths the runbook hard-codes, with its values as defaults; the same on every host of the profile.

    Optional sources may be set to null where the deployment has none; the checks that read them then skip and
    say so (never pass): `alerts_log: null` (no component writes an alerts log: MON-01 skips) and
    `policies: null` (the site keeps no policy files: CC-03 skips). `kernel_log` and `security_log` are null by
    default, which means "read the fallback" (dmesg; logs/*.log), not "skip". A path that is given must exist:
    a missing alerts log or policy directory fails its check.
    """

    logs: str = "/var/log/acgs"  # SEC-03 and SEC-06 read every *.log here (grep ... /var/log/acgs/*.log)
    alerts_log: str | None = "/var/log/acgs/alerts.log"  # MON-01 (tail -f /var/log/acgs/alerts.log); null: none
    app_root: str = "/home/acgs/ACGS"  # SEC-01 (find /home/acgs/ACGS -type f -perm /o+w)
    backups: str = "/var/backups/acgs"
    policies: str | None = "/home/acgs/ACGS/config/policies"  # CC-03; null: no policy files at this site
    passwd: str = "/etc/passwd"  # SEC-04 (cut -d: -f1 /etc/passwd)
    kernel_log: str | None = None  # SYS-05; None: read `dmesg` (which may need root: then name /var/log/kern.log)
    security_log: str | None = None  # SEC-03/SEC-06 read only this file when set; None: `logs`/*.log


class Key(_Strict):
    """A key or credential SEC-05 ages, on every host with role app."""

    name: str
    path: str  # its file; without a rotation_record, its mtime is when it was last rotated (SEC-02 stats it too)
    # app: thresholds.app_key_max_age_days applies; db: thresholds.db_credential_max_age_days
    kind: Literal["app", "db"] = "app"
    rotation_record: str | None = None  # a file whose content is an ISO timestamp of the last rotation


class Security(_Strict):
    """What SEC-02, SEC-04 and SEC-05 compare with."""

    secret_files: list[str] = []  # SEC-02: files that must be private (config/production.env ...)
    secret_owner: str | None = None  # SEC-02: their owner; None: any owner
    secret_max_mode: str = Field("0640", pattern=r"^0?[0-7]{3}$")  # SEC-02: the most permissive mode allowed
    allowed_users: list[str] = []  # SEC-04: every account in paths.passwd must be here; empty: SEC-04 skips
    keys: list[Key] = []  # SEC-05


class Backups(_Strict):
    """The backups under paths.backups: one folder per backup named YYYYMMDD, YYYYMMDD_HHMMSS, YYYY-MM-DD or
    YYYY-MM-DDTHHMMSS, and a `latest` symlink (followed when it stays inside the root). BK-01..BK-07 read them
    on the host `host` names, through its backend (`BK-01 backups@db-1`); without `host`, on the first host with
    role backup, else role db, else the first host (a profile that names no hosts: this machine). An archive on a
    remote host is read there, never copied: by its own gzip/tar/pg_restore, else streamed through the connection
    (BK-07 streams a plain dump into psql; a custom-format one there is refused).

        backups: {host: backup-1}
    """

    host: str | None = None  # the host that holds paths.backups; None: the first with role backup, then db

    # what each backup folder must hold; None: detected from the newest folder (the runbook's daily set
    # database.sql.gz, config.tar.gz, application.tar.gz, logs.tar.gz; or ACGS's backup script's database.sql
    # plus what its manifest.json lists)
    files: list[str] | None = None
    # the database dump: `plain` is pg_dump's SQL (gzipped when the name ends in .gz), `custom` is pg_dump -Fc
    # (BK-04 reads its table of contents and every data block with pg_restore); None: database.sql.gz or
    # database.sql, whichever the backup holds
    dump_file: str | None = None
    dump_format: Literal["plain", "custom"] = "plain"
    # BK-07, the restore drill: None runs it only in the gates that ask for it (pre-maintenance);
    # true/false turn it on or off for every run. It needs the database's admin_dsn credential.
    restore_drill: bool | None = None
    restore_database: str | None = None  # profile database name the drill restores next to; None: the first
    restore_tables: list[str] = ["audit_logs", "policies"]  # must have rows in the restored copy
    # when set, each restore table's row count must be within this percent of the live table's
    restore_count_tolerance_percent: float | None = Field(None, ge=0, le=100)
    restore_timeout_seconds: float = Field(600, gt=0)  # the whole drill, restore and checks
    # where `psql` / `pg_restore` live; None: PATH, then the newest /usr/lib/postgresql/*/bin
    pg_bindir: str | None = None


class Certificate(_Strict):
    """A PEM file TLS-01 reads (a leaf, optionally followed by its chain), on the host `host` names, through its
    backend (`TLS-01 /etc/ssl/acgs/cert.pem@proxy-1`); without `host`, on every host with role app, else the first
    host (a profile that names no hosts: this machine). A plain path in `certificates:` is `{path: PATH}`.

        certificates: [/etc/ssl/acgs/cert.pem, {path: /etc/nginx/tls/acgs.pem, host: proxy-1}]
    """

    path: str
    host: str | None = None


class Tls(_Strict):
    """TLS-02 verifies each of `tls_endpoints` against the system CAs, or against ca_file when set
    (also used by the HTTP probes for https services)."""

    ca_file: str | None = None  # a PEM bundle of the CAs to trust; None: the system's
    # off only on purpose: the run prints a warning line when a profile turns it off (TLS-02 always verifies)
    verify: bool = True


class Policies(_Strict):
    """CC-03: every policy file under paths.policies parses as `format` (auto: by extension, .yaml/.yml, .json,
    .rego) and names the profile's constitutional hash in `hash_field` (top level or under metadata;
    in Rego a rule `hash_field := "..."`).

    Which files are policy files: those matching one of `include` and none of `exclude` (glob patterns; a
    pattern without `/` matches the file name at any depth, one with `/` the path below paths.policies; `*`
    crosses directories; case does not matter). `include` defaults to the extensions of `format` (auto:
    *.rego, *.json, *.yaml, *.yml). Other files (CLAUDE.md, READMEs, notes) are not validated: CC-03 lists them
    once, as ignored. Hidden files and directories are never read.

        policies: {include: ["*.rego", "*.yaml"], exclude: ["drafts/*", "*.example.yaml"]}
    """

    # where the policy files are: host names or roles (CC-03 runs once per host, `CC-03 policies@app-1`, reading
    # paths.policies there through its backend); None: every host with role app, else the first host
    hosts: list[str] | None = None
    format: Literal["yaml", "json", "rego", "auto"] = "auto"
    hash_field: str = Field("constitutional_hash", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    include: list[str] | None = None
    exclude: list[str] = []

    @field_validator("include", "exclude")
    @classmethod
    def _globs(cls, v: list[str] | None) -> list[str] | None:
        for pattern in v or ():
            if not pattern.strip():
                raise ValueError("an empty glob pattern matches nothing")
        return v

    @field_validator("include")
    @classmethod
    def _include_something(cls, v: list[str] | None) -> list[str] | None:
        if v is not None and not v:
            raise ValueError("an empty include list makes no file a policy file; leave it out for the default "
                             "(*.rego, *.json, *.yaml, *.yml) or set paths.policies: null")
        return v

    @property
    def include_globs(self) -> list[str]:
        """`include`, or the extensions of `format` when it is not given."""
        if self.include is not None:
            return list(self.include)
        return {"yaml": ["*.yaml", "*.yml"], "json": ["*.json"], "rego": ["*.rego"]}.get(
            self.format, ["*.rego", "*.json", "*.yaml", "*.yml"])


RESPONSE_MINUTES = {"P0": 15.0, "P1": 60.0, "P2": 240.0, "P3": 1440.0}  # runbook, Incident Classification


class EscalationLevel(_Strict):
    """One level of the runbook's Escalation Matrix. Contacts are data the reports print; the suite sends nothing.

        {name: Level 1, who: on-call engineer, after_minutes: 0, contacts: [oncall@example.com]}
    """

    name: str = Field(min_length=1)  # how the reports name it: "Level 1"
    who: str = Field(min_length=1)  # the people it reaches: "on-call engineer"
    after_minutes: float = Field(0, ge=0)  # when an unresolved incident reaches this level
    contacts: list[str] = []  # e-mail addresses, pager or phone numbers, printed beside the level


class Escalation(_Strict):
    """Who to notify, and by when, for the highest severity that failed (runbook: Incident Classification,
    Escalation Matrix). Every report says it; the defaults are the runbook's, without its phone numbers.

        escalation: {levels: [{name: Level 1, who: on-call engineer, contacts: [+1-555-0123]}, ...]}
    """

    # the response time of each severity, in minutes: P0 <15 min, P1 <1 h, P2 <4 h, P3 <24 h; a severity left
    # out keeps the runbook's
    response_minutes: dict[Literal["P0", "P1", "P2", "P3"], float] = dict(RESPONSE_MINUTES)
    # the level notified first for each severity (a level's name); a severity not named here: the first level
    notify: dict[Literal["P0", "P1", "P2", "P3"], str] = {}
    levels: list[EscalationLevel] = [
        EscalationLevel(name="Level 1", who="on-call engineer", after_minutes=0),
        EscalationLevel(name="Level 2", who="technical lead and engineering manager", after_minutes=15),
        EscalationLevel(name="Level 3", who="CTO and security team (if security-related)", after_minutes=60),
    ]

    @field_validator("response_minutes")
    @classmethod
    def _every_severity(cls, v: dict) -> dict:
        if any(m <= 0 for m in v.values()):
            raise ValueError("response times must be more than 0 minutes")
        return {**RESPONSE_MINUTES, **v}

    @model_validator(mode="after")
    def _levels_named(self):
        if not self.levels:
            raise ValueError("levels: name at least one level to notify")
        names = [lv.name for lv in self.levels]
        for severity, level in self.notify.items():
            if level not in names:
                raise ValueError(f"notify.{severity}: {level!r} is not one of the levels ({', '.join(names)})")
        return self


class Evidence(_Strict):
    """What `--gate security-incident` copies into the run's evidence/ directory (acgs_verify/evidence.py): the
    logs its checks read, each cut to its last max_file_mb, and no more than max_total_mb in all."""

    max_file_mb: float = Field(50, gt=0)
    max_total_mb: float = Field(500, gt=0)


class Profile(_Strict):
    """An environment: what to check, where, and the limits. See docs/design.md for an example."""

    # part of the run directory's name and of every report; left out: the file's name (sandbox.yaml -> sandbox)
    name: str = ""
    description: str = ""  # for the people who read the profile; no check reads it
    # the hash every service, database, cache and policy must name (SVC-02, SVC-08, CC-01..CC-06)
    constitutional_hash: str = Field("cdd01ef066bc6cf2", pattern=HASH_RE)
    # an Ansible inventory (any format; a path relative to the profile file): its hosts join `hosts` with
    # backend ansible and their groups as roles; without `hosts:` in the profile they are the only hosts
    inventory: str | None = None
    hosts: list[Host] = [Host(name="localhost")]  # where host checks run; the default is this machine
    services: list[Service] = []
    databases: list[Database] = []
    redis: list[Redis] = []
    paths: Paths = Paths()  # the files and directories the checks read, the same on every host
    # TLS-01: PEM files (a leaf, optionally followed by its chain), each read on its host (Certificate)
    certificates: list[Certificate] = []
    # TLS-02: live endpoints as https://HOST[:PORT] (port 443 when left out)
    tls_endpoints: list[str] = []
    tls: Tls = Tls()
    security: Security = Security()
    backups: Backups = Backups()
    policies: Policies = Policies()
    thresholds: Thresholds = Thresholds()  # every limit a check compares with, by name
    escalation: Escalation = Escalation()  # who to notify, by when: every report says it for a failed run
    evidence: Evidence = Evidence()  # size caps of the security-incident gate's copy of the logs
    # resolved secrets by "databases[0]" style owner; filled by load_profile, never from YAML
    secrets: dict[str, SecretStr] = Field(default_factory=dict, exclude=True)
    source: str = Field("", exclude=True)

    @model_validator(mode="after")
    def _unique_names(self):
        for field in ("hosts", "services", "databases", "redis"):
            seen: set[str] = set()
            for item in getattr(self, field):
                if item.name in seen:
                    raise ValueError(f"{field}: name {item.name!r} is used twice")
                seen.add(item.name)
        return self

    @field_validator("certificates", mode="before")
    @classmethod
    def _paths_are_certificates(cls, v):
        return [{"path": c} if isinstance(c, str) else c for c in v] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _file_hosts_exist(self):
        """backups.host, certificates[].host and policies.hosts name hosts of this profile (or, for policies, a
        role); with an inventory the hosts are known only once it is read, so they are checked then."""
        if self.inventory:
            return self
        names, roles = {h.name for h in self.hosts}, {r for h in self.hosts for r in h.roles}
        wanted = [("backups.host", self.backups.host, names)]
        wanted += [(f"certificates[{i}].host", c.host, names) for i, c in enumerate(self.certificates)]
        wanted += [("policies.hosts", n, names | roles) for n in self.policies.hosts or ()]
        for field_name, value, known in wanted:
            if value is not None and value not in known:
                raise ValueError(f"{field_name}: {value!r} names no host of this profile "
                                 f"(hosts: {', '.join(sorted(names))})")
        return self

    def file_hosts(self, names: list[str] | str | None, role: str, first: bool = False) -> list[Host]:
        """Where files named by a profile field live: the hosts (or hosts with the roles) `names` gives, else the
        hosts with `role` (only the first when `first`). A profile that names no hosts has this machine, with
        every role."""
        if names:
            wanted = [names] if isinstance(names, str) else list(names)
            return [h for h in self.hosts if h.name in wanted or set(h.roles) & set(wanted)]
        found = self.hosts_with_role(role)
        return found[:1] if first else found

    @field_validator("tls_endpoints")
    @classmethod
    def _endpoints(cls, v: list[str]) -> list[str]:
        for url in v:
            if "@" in url or "?" in url:  # a user-info or query may hold a password: refused without quoting it
                raise _withheld("an endpoint is https://HOST[:PORT], without a user-info or a query (value not "
                                "shown: it may hold a password)")
            try:
                parts = urlsplit(url)
                parts.port  # noqa: B018 (raises on a bad port)
            except ValueError as exc:
                raise ValueError(f"{url!r}: {exc}") from None
            if parts.scheme != "https" or not parts.hostname:
                raise ValueError(f"{url!r}: must be an https://HOST[:PORT] URL")
        return v

    def hosts_with_role(self, role: str) -> list[Host]:
        return [h for h in self.hosts if role in h.roles]

    def secret(self, owner: str) -> str | None:
        s = self.secrets.get(owner)
        return s.get_secret_value() if s else None

    def insecure_settings(self) -> list[str]:
        """Checks this profile has turned off on purpose; each run says so in a warning line."""
        out = []
        if not self.tls.verify:
            out.append("TLS certificates are not verified (profile field tls.verify: false)")
        for h in self.hosts:
            if h.backend in ("ssh", "paramiko") and not h.strict_host_key_checking:
                out.append(f"ssh host keys of {h.name} are not checked (hosts.{h.name}.strict_host_key_checking)")
        return out

    def secret_values(self) -> list[str]:
        """Every secret this profile resolved, for masking output."""
        return [s.get_secret_value() for s in self.secrets.values() if s.get_secret_value()]
