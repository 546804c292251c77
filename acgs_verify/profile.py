"""Environment profiles: the YAML model, `extends:` inheritance, secrets by reference, --set overrides.

>>> profile = load_profile("sandbox", overrides=["thresholds.db_long_query_seconds=60"])
>>> profile.thresholds.db_long_query_seconds
60

Every field is documented on the model below; that docstring is what `acgs-verify` users read.
A bad profile raises ProfileError, whose str() is one line naming the file, the line and the field.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

MAX_PROFILE_BYTES = 1 << 20  # a profile is a page of YAML; anything larger is a mistake or an attack
MAX_EXPANDED_NODES = 20_000  # bounds alias expansion (billion laughs) before anything walks the data
MAX_DEPTH = 40
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


class ProfileError(Exception):
    """Bad input in a profile or an override; str() is the one line a user sees."""


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


class Thresholds(_Strict):
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
    availability_percent_min: float = Field(99.9, ge=0, le=100)
    availability_window_days: float = Field(30, gt=0)
    availability_min_runs: int = Field(20, ge=1)
    # not in the catalog's table, but every probe needs one: how long a host or socket gets to answer
    connect_timeout_seconds: float = Field(3, gt=0)
    # not in the catalog either: the statement_timeout of every database session the checks open, so no
    # check's query can run on (or hold a lock) past it
    db_statement_timeout_seconds: float = Field(15, gt=0)


class Host(_Strict):
    """A machine that checks run on. `backend` picks how testinfra reaches it: `local` (this machine), `ssh`
    (OpenSSH, one multiplexed connection per host), `paramiko`, or `ansible` (hosts from the profile's
    `inventory`, connection settings from the inventory's variables).

    ssh and paramiko check the host key against `known_hosts` (default ~/.ssh/known_hosts) unless
    `strict_host_key_checking` is false. `identity_file` names the key; without one, ssh uses the agent.
    `ssh_config` is read after the profile's own fields (ProxyJump for bastions goes there; ssh backend only).
    `mounts` are the filesystems SYS-04 checks with df.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    address: str = "127.0.0.1"
    backend: Literal["local", "ssh", "paramiko", "ansible"] = "local"
    roles: list[str] = ["app", "db", "cache"]
    user: str | None = None
    port: int | None = Field(None, ge=1, le=65535)
    identity_file: str | None = None
    known_hosts: str | None = None
    ssh_config: str | None = None
    # host keys are checked unless a profile says otherwise, and then the run prints a warning
    strict_host_key_checking: bool = True
    # the passphrase of identity_file, for the paramiko backend (OpenSSH in batch mode takes one only from an
    # agent: load the key with ssh-add instead). Like every secret, named here, never written here.
    identity_passphrase_env: str | None = None
    identity_passphrase_file: str | None = None

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

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    role: str = "app"
    port: int = Field(ge=1, le=65535)
    scheme: Literal["http", "https"] = "http"
    health_path: str = "/health"
    ready_path: str | None = None
    live_path: str | None = None
    metrics_path: str | None = None
    # a gauge on metrics_path holding the compliance rate (0..1) of recent governance decisions, e.g.
    # acgs_constitutional_compliance; CC-04 reads it where it is named
    compliance_metric: str | None = None
    # regex over the full command line (ps -eo args) of the process that owns `port`: it confirms the owner, and
    # counts alone only where the owner is hidden from the checker (then SVC-03 says so and warns)
    process: str | None = None
    unit: str | None = None
    log: str | None = None
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
    """A PostgreSQL database (a primary). The DSN carries no password: see password_env / password_file.

    The checks connect as the DSN's user with a read-only session (default_transaction_read_only,
    statement_timeout, lock_timeout, application_name=acgs-verify). DB-04/DB-05 see other sessions' query
    text only if that role may (superuser or a member of pg_read_all_stats).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    role: str = "db"
    dsn: str
    # DB-02: the systemd unit (checked where the host runs systemd) and a regex over the command line (ps -eo args)
    # of the server that owns the DSN's port on the database's host; None leaves that half out
    unit: str | None = "postgresql"
    process: str | None = r"postgres"
    # streaming replicas of this primary, as DSNs without a password (same role and secret as `dsn`):
    # DB-07 asks each one how far its replay is behind, besides reading pg_stat_replication on the primary
    replicas: list[str] = []
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
    # credential (DSN + secret) allowed to CREATE DATABASE, for the opt-in restore drill only
    admin_dsn: str | None = None
    admin_password_env: str | None = None
    admin_password_file: str | None = None

    @field_validator("dsn", "admin_dsn")
    @classmethod
    def _dsn_has_no_password(cls, v: str | None) -> str | None:
        return v if v is None else _postgres_url(v)

    @field_validator("replicas")
    @classmethod
    def _replica_dsns(cls, v: list[str]) -> list[str]:
        return [_postgres_url(dsn) for dsn in v]


def _postgres_url(v: str) -> str:
    if not v.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a postgresql:// URL")
    if urlsplit(v).password:
        raise ValueError("must not contain a password; use password_env or password_file")
    return v


class Redis(_SecretRef):
    """A Redis server. The URL carries no password: see password_env / password_file. Checks send read
    commands only (PING, INFO, GET)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    role: str = "cache"
    url: str
    # CC-06: the key that must hold the constitutional hash; None: this cache holds none
    hash_key: str | None = "acgs:constitutional_hash"

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("redis://", "rediss://")):
            raise ValueError("must be a redis:// or rediss:// URL")
        if urlsplit(v).password:
            raise ValueError("must not contain a password; use password_env or password_file")
        return v


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
    name: str
    path: str
    kind: Literal["app", "db"] = "app"
    rotation_record: str | None = None  # a file whose content is an ISO timestamp of the last rotation


class Security(_Strict):
    secret_files: list[str] = []
    secret_owner: str | None = None
    secret_max_mode: str = Field("0640", pattern=r"^0?[0-7]{3}$")
    allowed_users: list[str] = []
    keys: list[Key] = []


class Backups(_Strict):
    """The backups under paths.backups: one folder per backup named YYYYMMDD, YYYYMMDD_HHMMSS, YYYY-MM-DD or
    YYYY-MM-DDTHHMMSS, and a `latest` symlink (followed when it stays inside the root). BK-01..BK-07 read them
    on the machine acgs-verify runs on."""

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


class Tls(_Strict):
    """TLS-02 verifies each of `tls_endpoints` against the system CAs, or against ca_file when set
    (also used by the HTTP probes for https services)."""

    ca_file: str | None = None
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


class Profile(_Strict):
    """An environment: what to check, where, and the limits. See docs/design.md for an example."""

    name: str = ""
    description: str = ""
    constitutional_hash: str = Field("cdd01ef066bc6cf2", pattern=HASH_RE)
    # an Ansible inventory (any format; a path relative to the profile file): its hosts join `hosts` with
    # backend ansible and their groups as roles; without `hosts:` in the profile they are the only hosts
    inventory: str | None = None
    hosts: list[Host] = [Host(name="localhost")]
    services: list[Service] = []
    databases: list[Database] = []
    redis: list[Redis] = []
    paths: Paths = Paths()
    # TLS-01: PEM files (a leaf, optionally followed by its chain), read on the machine acgs-verify runs on
    certificates: list[str] = []
    # TLS-02: live endpoints as https://HOST[:PORT] (port 443 when left out)
    tls_endpoints: list[str] = []
    tls: Tls = Tls()
    security: Security = Security()
    backups: Backups = Backups()
    policies: Policies = Policies()
    thresholds: Thresholds = Thresholds()
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

    @field_validator("tls_endpoints")
    @classmethod
    def _endpoints(cls, v: list[str]) -> list[str]:
        for url in v:
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


# ------------------------------------------------------------------------------------------- loading


def profile_dirs() -> list[Path]:
    """Where profile names are looked up: ./profiles, $ACGS_VERIFY_PROFILES, then the shipped ones."""
    dirs = [Path.cwd() / "profiles"]
    dirs += [Path(p) for p in os.environ.get("ACGS_VERIFY_PROFILES", "").split(os.pathsep) if p]
    here = Path(__file__).resolve().parent
    dirs += [here / "_profiles", here.parent / "profiles"]
    return dirs


def available_profiles() -> list[str]:
    names: set[str] = set()
    for d in profile_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


def find_profile(name_or_path: str, relative_to: Path | None = None) -> Path:
    looks_like_path = "/" in name_or_path or name_or_path.endswith((".yaml", ".yml"))
    if looks_like_path:
        p = Path(name_or_path).expanduser()
        if not p.is_absolute() and relative_to is not None:
            p = relative_to / p
        if p.is_dir():
            raise ProfileError(f"{p} is a directory, not a profile: give a profile's .yaml file or its name")
        if not p.is_file():
            raise ProfileError(f"profile file not found: {p}")
        return p.resolve()
    if relative_to is not None and (relative_to / f"{name_or_path}.yaml").is_file():
        return (relative_to / f"{name_or_path}.yaml").resolve()
    for d in profile_dirs():
        p = d / f"{name_or_path}.yaml"
        if p.is_file():
            return p.resolve()
    if relative_to is None and Path(name_or_path).expanduser().is_dir():
        raise ProfileError(f"{name_or_path} is a directory, not a profile: give a profile's .yaml file or its name")
    raise ProfileError(
        f"unknown profile {name_or_path!r}; available: {', '.join(available_profiles()) or 'none'}"
    )


class _Located:
    """Parsed YAML plus where each value came from: path tuple -> (file, line)."""

    def __init__(self, data: Any, where: dict[tuple, tuple[str, int]]):
        self.data = data
        self.where = where


def _read_yaml(path: Path) -> _Located:
    shown = _shown(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ProfileError(f"{shown}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_PROFILE_BYTES:
        raise ProfileError(f"{shown}: profile is {len(raw)} bytes; the limit is {MAX_PROFILE_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError(f"{shown}: not UTF-8 (byte {exc.start})") from None
    _check_flow_depth(text, shown)
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # its reader already refuses control characters
        node = loader.get_single_node()
        if node is None:
            return _Located({}, {})
        _check_size(node, shown)
        _check_keys_and_dates(node, shown, loader)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark else ""
        raise ProfileError(f"{shown}{line}: YAML syntax error: {exc.problem or exc.context}") from None
    except yaml.YAMLError as exc:
        raise ProfileError(f"{shown}: YAML error: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise ProfileError(f"{shown}: YAML nested too deeply") from None
    except (ValueError, OverflowError) as exc:  # a value YAML's own constructors refuse; the walk names most
        raise ProfileError(f"{shown}: YAML value cannot be read: {exc}") from None
    finally:
        if loader is not None:
            loader.dispose()
    if data is None:  # `---` alone, or `~`: as empty as an empty file
        return _Located({}, {})
    if not isinstance(data, dict):
        raise ProfileError(f"{shown}:1: a profile is a mapping of fields, not {type(data).__name__}")
    where: dict[tuple, tuple[str, int]] = {}
    _record_lines(node, (), shown, where, set())
    return _Located(data, where)


_QUOTED = re.compile(r'"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|#[^\n]*')


def _check_flow_depth(text: str, shown: str) -> None:
    """Refuse [[[[...]]]] before PyYAML recurses through it (thousands of levels take it a second)."""
    depth = 0
    for line_no, line in enumerate(_QUOTED.sub("", text).splitlines(), 1):
        for ch in line:
            if ch in "[{":
                depth += 1
                if depth > MAX_DEPTH:
                    raise ProfileError(f"{shown}:{line_no}: nested more than {MAX_DEPTH} levels")
            elif ch in "]}":
                depth = max(0, depth - 1)


def _check_size(node: yaml.Node, shown: str) -> None:
    """Refuse alias bombs and absurd nesting before constructing anything (memoized, so it is cheap)."""
    memo: dict[int, int] = {}

    def size(n: yaml.Node, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise ProfileError(f"{shown}:{n.start_mark.line + 1}: nested more than {MAX_DEPTH} levels")
        if id(n) in memo:
            return memo[id(n)]
        memo[id(n)] = 1  # guards against recursive aliases
        if isinstance(n, yaml.MappingNode):
            total = 1 + sum(size(k, depth + 1) + size(v, depth + 1) for k, v in n.value)
        elif isinstance(n, yaml.SequenceNode):
            total = 1 + sum(size(v, depth + 1) for v in n.value)
        else:
            total = 1
        if total > MAX_EXPANDED_NODES:
            raise ProfileError(
                f"{shown}:{n.start_mark.line + 1}: expands to more than {MAX_EXPANDED_NODES} values"
                " (YAML aliases?)"
            )
        memo[id(n)] = total
        return total

    size(node, 0)


_MERGE_TAG = "tag:yaml.org,2002:merge"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


def _check_keys_and_dates(node: yaml.Node, shown: str, loader: yaml.SafeLoader) -> None:
    """A key given twice at any level names both lines (YAML would keep the last one silently), and an impossible
    date (2025-02-30) names its line and field instead of failing later as "day is out of range"."""
    seen: set[int] = set()

    def walk(n: yaml.Node, path: tuple) -> None:
        if id(n) in seen:  # an alias: checked where it was defined
            return
        seen.add(id(n))
        if isinstance(n, yaml.MappingNode):
            first: dict[str, int] = {}
            for k, v in n.value:
                if isinstance(k, yaml.ScalarNode) and k.tag != _MERGE_TAG:
                    line = k.start_mark.line + 1
                    if k.value in first:
                        raise ProfileError(f"{shown}:{line}: {_dotted(path + (k.value,))}: key given twice "
                                           f"(lines {first[k.value]} and {line}); keep one")
                    first[k.value] = line
                walk(v, path + ((k.value if isinstance(k, yaml.ScalarNode) else "?"),))
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                walk(v, path + (i,))
        elif isinstance(n, yaml.ScalarNode) and n.tag == _TIMESTAMP_TAG:
            try:
                loader.construct_yaml_timestamp(n)
            except (ValueError, OverflowError) as exc:
                raise ProfileError(f"{shown}:{n.start_mark.line + 1}: {_dotted(path)}: not a real date "
                                   f"{n.value!r} ({exc})") from None

    walk(node, ())


def _record_lines(node, path, shown, where, seen) -> None:
    if id(node) in seen:
        return
    seen.add(id(node))
    where[path] = (shown, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else str(k)
            where[path + (key,)] = (shown, k.start_mark.line + 1)
            _record_lines(v, path + (key,), shown, where, seen)
            where[path + (key,)] = (shown, k.start_mark.line + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, v in enumerate(node.value):
            _record_lines(v, path + (i,), shown, where, seen)


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _merge(base: _Located, over: _Located) -> _Located:
    """Maps merge key by key; lists and scalars replace (docs/design.md)."""

    def merge(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            out = dict(a)
            for k, v in b.items():
                out[k] = merge(a[k], v, path + (k,)) if k in a else v
            return out
        return b

    # where the child replaces a list or scalar, the parent's locations below it no longer apply
    replaced = [q for q in over.where if q and not _is_map_path(over.data, q)]
    where = {p: w for p, w in base.where.items() if not any(p[: len(q)] == q for q in replaced)}
    where.update(over.where)
    return _Located(merge(base.data, over.data, ()), where)


def _is_map_path(data, path) -> bool:
    for k in path:
        if not isinstance(data, dict) or k not in data:
            return False
        data = data[k]
    return isinstance(data, dict)


def _load_chain(path: Path, chain: tuple[Path, ...] = ()) -> _Located:
    if path in chain:
        cycle = " -> ".join(_shown(p) for p in chain + (path,))
        raise ProfileError(f"{_shown(path)}: extends cycle: {cycle}")
    located = _read_yaml(path)
    parent = located.data.pop("extends", None)
    if parent is None:
        return located
    if not isinstance(parent, str):
        file, line = located.where.get(("extends",), (_shown(path), 1))
        raise ProfileError(f"{file}:{line}: extends: must be a profile name or path")
    try:
        parent_path = find_profile(parent, relative_to=path.parent)
    except ProfileError as exc:
        file, line = located.where.get(("extends",), (_shown(path), 1))
        raise ProfileError(f"{file}:{line}: extends: {exc}") from None
    return _merge(_load_chain(parent_path, chain + (path,)), located)


_VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(data: Any, where, path=()) -> Any:
    """${VAR} and ${VAR:-default} in string values, so one profile serves several sandboxes."""
    if isinstance(data, dict):
        return {k: _interpolate(v, where, path + (k,)) for k, v in data.items()}
    if isinstance(data, list):
        return [_interpolate(v, where, path + (i,)) for i, v in enumerate(data)]
    if isinstance(data, str) and "${" in data:

        def sub(m: re.Match) -> str:
            value = os.environ.get(m.group(1))
            if value is None or (value == "" and m.group(2) is not None):
                if m.group(2) is None:
                    raise ProfileError(f"{_where(where, path)}: environment variable {m.group(1)} is not set")
                return m.group(2)
            return value

        return _VAR_RE.sub(sub, data)
    return data


def _where(where: dict, path: tuple) -> str:
    for n in range(len(path), -1, -1):
        if path[:n] in where:
            file, line = where[path[:n]]
            return f"{file}:{line}: {_dotted(path)}" if path else f"{file}:{line}"
    return _dotted(path) or "profile"


def _dotted(path: Iterable) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
            continue
        # a key from the file may be anything YAML allows, newlines included: quote it unless plain
        key = str(p) if re.fullmatch(r"[A-Za-z0-9_.-]+", str(p)) else repr(str(p)[:60])
        out += f".{key}" if out else key
    return out


# --------------------------------------------------------------------------------------------- --set


def parse_override(text: str) -> tuple[tuple, Any]:
    """'thresholds.db_long_query_seconds=60' -> (('thresholds', 'db_long_query_seconds'), 60).

    A list item is addressed by index or by its name: services.auth.port=9000 or services.0.port=9000.
    The value is read as a YAML scalar, then type-checked by the model.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or not re.fullmatch(r"[A-Za-z0-9_.-]+", key.strip()):
        raise ProfileError(f"--set {text!r}: expected dotted.key=VALUE, e.g. thresholds.db_long_query_seconds=60")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, dict | list):
        raise ProfileError(f"--set {text!r}: VALUE must be a single value, not a {type(value).__name__}")
    return tuple(key.strip().split(".")), value


def _apply_override(data: dict, path: tuple, value: Any, text: str) -> tuple:
    node: Any = data
    real: list = []
    for i, part in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, list):
            idx = _list_index(node, part)
            if idx is None:
                names = [x.get("name") for x in node if isinstance(x, dict)]
                raise ProfileError(f"--set {text}: no item {part!r} in {_dotted(real)} (have: {names})")
            real.append(idx)
            if last:
                raise ProfileError(f"--set {text}: cannot replace a whole list item")
            node = node[idx]
        elif isinstance(node, dict):
            real.append(part)
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ProfileError(f"--set {text}: {_dotted(real)} is a single value, it has no field {part!r}")
    return tuple(real)


def _list_index(items: list, part: str) -> int | None:
    if part.isdigit():
        return int(part) if int(part) < len(items) else None
    for i, x in enumerate(items):
        if isinstance(x, dict) and x.get("name") == part:
            return i
    return None


# ------------------------------------------------------------------------------------------- secrets


# (list field, owner prefix, env field, file field, what the secret is): every secret a profile may reference
_SECRET_REFS = (
    ("databases", "", "password_env", "password_file", "the password"),
    ("databases", "admin:", "admin_password_env", "admin_password_file", "the restore drill's password"),
    ("redis", "", "password_env", "password_file", "the password"),
    ("hosts", "", "identity_passphrase_env", "identity_passphrase_file", "the ssh key passphrase"),
)


def _resolve_secrets(profile: Profile, where: dict) -> dict[str, SecretStr]:
    """{"databases.primary": ..., "admin:databases.primary": ..., "redis.cache": ..., "hosts.app-1": ...}"""
    out: dict[str, SecretStr] = {}
    for field, prefix, env_field, file_field, what in _SECRET_REFS:
        for i, item in enumerate(getattr(profile, field)):
            owner = f"{prefix}{field}.{item.name}"
            env, file = getattr(item, env_field), getattr(item, file_field)
            if env:
                value = os.environ.get(env)
                if value is None:
                    raise ProfileError(f"{_where(where, (field, i, env_field))}: environment variable {env} is not"
                                       f" set (it holds {what} for {field} {item.name!r})")
                out[owner] = SecretStr(value)
            elif file:
                p = Path(file).expanduser()
                try:
                    out[owner] = SecretStr(p.read_text().strip())
                except OSError as exc:
                    raise ProfileError(
                        f"{_where(where, (field, i, file_field))}: cannot read secret file {p}: {exc.strerror}"
                    ) from None
    return out


# ------------------------------------------------------------------------------------------ the entry


def load_profile(name_or_path: str, overrides: Iterable[str] = (), resolve_secrets: bool = True) -> Profile:
    """Load, merge, interpolate, override, validate, and resolve secrets. Raises ProfileError.

    resolve_secrets=False is for listing what would run (catalog, --collect-only), not for running it.
    """
    path = find_profile(name_or_path)
    located = _load_chain(path)
    data = _interpolate(located.data, located.where)
    set_paths: list[tuple[tuple, str]] = []
    for text in overrides:
        key, value = parse_override(text)
        set_paths.append((_apply_override(data, key, value, text), text))
    # a file name may hold anything; the profile's name becomes part of a directory name
    data.setdefault("name", re.sub(r"[^A-Za-z0-9_.-]+", "-", path.stem).lstrip(".-") or "profile")
    if not any(data.get(field) for field in TARGET_FIELDS):
        raise ProfileError(f"{_shown(path)}: names no target: give hosts (or inventory), services, databases, redis,"
                           " certificates or tls_endpoints (an empty profile would check this machine at the "
                           "runbook's production paths)")
    _add_inventory_hosts(data, path, located.where)
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        raise ProfileError(_validation_line(exc, located.where, set_paths)) from None
    _check_path_name(profile.name, located.where, set_paths)
    secrets = _resolve_secrets(profile, located.where) if resolve_secrets else {}
    return profile.model_copy(update={"secrets": secrets, "source": str(path)})


def _check_path_name(name: str, where: dict, set_paths) -> None:
    if PATH_NAME_RE.fullmatch(name):
        return
    source = next((f"--set {text}" for real, text in set_paths if real == ("name",)), _where(where, ("name",)))
    raise ProfileError(f"{source}: name {name[:60]!r} becomes part of the run's directory name: use letters, digits,"
                       " '.', '_' and '-' (not first)")


def _add_inventory_hosts(data: dict, profile_path: Path, where: dict) -> None:
    inv = data.get("inventory")
    if not isinstance(inv, str) or not inv:
        return
    from acgs_verify.inventory import InventoryError, inventory_hosts

    path = Path(inv).expanduser()
    if not path.is_absolute():
        path = profile_path.parent / path
    data["inventory"] = str(path.resolve())
    try:
        found = inventory_hosts(path.resolve())
    except InventoryError as exc:
        raise ProfileError(f"{_where(where, ('inventory',))}: {exc}") from None
    data["hosts"] = (data["hosts"] if isinstance(data.get("hosts"), list) else []) + found


def _validation_line(exc: ValidationError, where: dict, set_paths) -> str:
    # an unknown key first: `expire:` also makes `expires` missing, and the typo is what the user must see
    errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")
    err = errors[0]
    loc = tuple(err["loc"])
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        missing = [str(e["loc"][-1]) for e in errors if e["type"] == "missing" and tuple(e["loc"][:-1]) == loc[:-1]]
        close = difflib.get_close_matches(str(loc[-1]), missing, n=1, cutoff=0.6)
        msg = f"unknown field {loc[-1]!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
    elif "input" in err and err["type"] not in ("missing",) and not isinstance(err["input"], dict | list):
        shown = err["input"]
        if isinstance(shown, str) and "://" in shown:
            shown = display_url(shown)  # a rejected DSN may be rejected precisely for holding a password
        msg = f"{msg} (got {shown!r})"
    msg = msg.removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    for real, text in set_paths:
        if loc[: len(real)] == real or real[: len(loc)] == loc:
            return f"--set {text}: {_dotted(loc)}: {msg}{more}"
    return f"{_where(where, loc)}: {msg}{more}" if loc else f"{_where(where, ())}: {msg}{more}"


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
