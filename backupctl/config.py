"""Parsing and validating `backupctl.toml`, `jobs/*.toml` and `restore_drills/*.toml`.

Everything is validated before any job starts. Each problem becomes one line naming the file, the field and
what is expected. Relative paths in a file resolve against the folder of `backupctl.toml`.
"""

from __future__ import annotations

import os
import re
import tomllib
import typing
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from backupctl.errors import ConfigError, did_you_mean

CONFIG_ENV = "BACKUPCTL_CONFIG"
DEFAULT_CONFIG = Path("backupctl.toml")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# a configuration file larger than this is refused unread: real ones are a few KiB, and a huge file is a
# mistake (a log or an archive given as --config) that would otherwise be parsed into memory
MAX_CONFIG_BYTES = 1024 * 1024


class Strict(BaseModel):
    # inf and nan are valid TOML floats; no duration, size or count here means either
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    # fields where "" has a documented meaning (none); everywhere else "" is a mistake, not a value: an empty
    # path would resolve to the config's own folder, an empty name to nothing
    empty_allowed: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _not_empty(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        for key, value in data.items():
            if key in cls.empty_allowed or key not in cls.model_fields:
                continue
            if isinstance(value, str) and not value.strip():
                raise PydanticCustomError("empty", "{key}: expected a non-empty value", {"key": key})
            if isinstance(value, list) and any(isinstance(v, str) and not v.strip() for v in value):
                raise PydanticCustomError("empty", "{key}: expected a list without empty entries", {"key": key})
        return data


def _check_name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError("a name of letters, digits, '.', '_' or '-' (at most 64, not starting with a sign)")
    return value


def validate_cron(expr: str, timezone: str = "UTC") -> str:
    # crontab weekday numbers (0 = Sunday) are translated there; APScheduler 3.x counts from Monday
    from backupctl.scheduler.triggers import cron_trigger

    try:
        cron_trigger(expr, timezone)
    except (ValueError, KeyError, LookupError) as exc:
        raise ValueError(f"a 5-field cron expression like '0 2 * * *' ({exc})") from None
    return expr


# backupctl.toml ----------------------------------------------------------------------------------------


class CatalogConfig(Strict):
    path: Path = Path("var/catalog.sqlite")


class StagingConfig(Strict):
    """The restic repository on the backup host where every backup is written first."""

    repository: Path = Path("var/staging-repo")
    password_file: Path | None = Path("secrets/restic-password")
    password_env: str | None = None          # name of an environment variable holding the password
    cache_dir: Path | None = None
    lock_wait_seconds: float = Field(default=0.0, ge=0)   # wait this long for another backupctl run on the repo

    @model_validator(mode="after")
    def _one_password_source(self) -> StagingConfig:
        if self.password_file is None and self.password_env is None:
            raise ValueError("set password_file (a 0600 file) or password_env (an environment variable name)")
        return self


class PathsConfig(Strict):
    jobs: Path = Path("jobs")
    drills: Path = Path("restore_drills")
    state: Path = Path("var")                # locks, scratch space, reports


class SigningConfig(Strict):
    key_file: Path = Path("secrets/signing.key")   # Ed25519 private key (0600); the .pub sits beside it


class VerifyConfig(Strict):
    """Verification: how the repository is read back over time and what a restore check does."""

    read_data_slices: int = Field(default=12, ge=1, le=256)   # every pack is read once every N `verify repo`
    max_unverified_days: float = Field(default=31, gt=0)      # `verify --status` fails past this age
    sample_studies: int = Field(default=0, ge=0)              # `verify restore`: 0 = the whole snapshot
    decode_sample: int = Field(default=20, ge=0)              # DICOM files whose pixel data is decoded
    workers: int | None = Field(default=None, ge=1, le=64)    # processes hashing/parsing (default: all cores)
    scratch: Path | None = None                               # where `verify restore` restores (default: state)


class SuspectConfig(Strict):
    """When a new snapshot is called suspect (ransomware-like changes against the previous manifest). Shares
    are of the previous snapshot's files (DICOM instances for the DICOM signals); a share fires only from
    `min_files` files on, so a small archive's ordinary day never fires."""

    enabled: bool = True
    min_files: int = Field(default=5, ge=1)
    rewritten_share: float = Field(default=0.02, gt=0, le=1)      # instances rewritten beyond a header fix
    header_correction_share: float = Field(default=0.5, gt=0, le=1)   # even corrections, when this many
    lost_dicom_share: float = Field(default=0.005, gt=0, le=1)    # lost DICM / no longer parse
    uid_changed_share: float = Field(default=0.02, gt=0, le=1)
    entropy_share: float = Field(default=0.02, gt=0, le=1)        # changed files whose entropy jumped
    entropy_rise: float = Field(default=0.5, gt=0, le=8)          # bits/byte above the file's own past
    entropy_floor: float = Field(default=7.5, ge=0, le=8)         # ... reaching at least this
    renamed_share: float = Field(default=0.05, gt=0, le=1)
    deleted_share: float = Field(default=0.30, gt=0, le=1)
    encrypted_extension_files: int = Field(default=3, ge=1)       # new files named like encrypted ones
    ransom_notes: int = Field(default=1, ge=1)
    executable_preambles: int = Field(default=1, ge=1)            # DICOM/PE or ELF polyglots, new or changed
    keep_clean: int = Field(default=7, ge=1)   # `forget` keeps this many newest clean snapshots while one is open


class MediaTargetConfig(Strict):
    """Offline media: labelled removable disks mounted at `mount`, rotated."""

    type: Literal["media"]
    mount: Path
    labels: list[str] = Field(min_length=1)
    rotation_days: float = Field(default=7, gt=0)
    folder: str = "backupctl"
    concurrency: int = Field(default=2, ge=1, le=16)   # files copied at once (each checked by its name)
    # a plain folder (a NAS share, a test) instead of a disk mounted there: without it, a folder on the root
    # filesystem is refused, so an absent disk never turns into backups filling the system disk
    allow_unmounted: bool = False

    @field_validator("labels")
    @classmethod
    def _labels_are_names(cls, labels: list[str]) -> list[str]:
        for label in labels:
            _check_name(label)
        return labels


class S3Credentials(Strict):
    """Where the S3 keys come from; never argv, never logged."""

    source: Literal["env", "profile", "file"] = "env"
    profile: str | None = None               # profile name (source=profile), or section of `file`
    file: Path | None = None                 # INI like ~/.aws/credentials, mode 0600
    access_key_env: str = "AWS_ACCESS_KEY_ID"
    secret_key_env: str = "AWS_SECRET_ACCESS_KEY"
    session_token_env: str | None = None     # e.g. "AWS_SESSION_TOKEN" for temporary credentials

    @model_validator(mode="after")
    def _source_fields(self) -> S3Credentials:
        if self.source == "profile" and not self.profile:
            raise ValueError("set profile (a name in ~/.aws/credentials) for source = 'profile'")
        if self.source == "file" and self.file is None:
            raise ValueError("set file (an INI credentials file, mode 0600) for source = 'file'")
        return self


# S3 limits: a single PUT takes at most 5 GiB; restic packs are far smaller, so multipart is the exception
S3_MAX_SINGLE_PUT_MIB = 5 * 1024


class S3TargetConfig(Strict):
    """An S3 bucket with Object Lock: the immutable copy."""

    empty_allowed: ClassVar[frozenset[str]] = frozenset({"prefix"})

    type: Literal["s3"]
    endpoint: str | None = None              # None = AWS
    region: str = "us-east-1"
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    prefix: str = ""
    credentials: S3Credentials = S3Credentials()
    expire_credentials: S3Credentials | None = None   # may delete expired versions; the writer may not
    hold_credentials: S3Credentials | None = None     # may set/lift legal holds (`incident freeze`); the writer may not
    lock_mode: Literal["COMPLIANCE", "GOVERNANCE"] = "COMPLIANCE"
    retention_days: float = Field(default=30, gt=0)
    # extra lock time given to data/index/keys when they are locked or extended, so a daily run does not
    # extend every object every day; None = a quarter of retention_days, at most 7 days
    extend_slack_days: float | None = Field(default=None, ge=0)
    verify_tls: bool = True
    ca_bundle: Path | None = None
    concurrency: int = Field(default=4, ge=1, le=64)
    addressing_style: Literal["auto", "path", "virtual"] = "auto"   # auto = path for a custom endpoint
    multipart_threshold_mib: int = Field(default=S3_MAX_SINGLE_PUT_MIB, ge=5, le=S3_MAX_SINGLE_PUT_MIB)
    part_size_mib: int = Field(default=64, ge=5, le=S3_MAX_SINGLE_PUT_MIB)
    max_attempts: int = Field(default=5, ge=1, le=20)
    timeout_seconds: float = Field(default=60, gt=0)

    @field_validator("endpoint")
    @classmethod
    def _endpoint_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not re.match(r"^https?://[^/\s]+/?$", value):
            raise ValueError("an http(s) URL without a path, like 'https://s3.example.org:7480'")
        if "@" in value:
            raise ValueError("an endpoint URL without user or password (credentials go in [credentials])")
        return value.rstrip("/")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip("/")
        if value and not re.fullmatch(r"[A-Za-z0-9._/-]+", value):
            raise ValueError("a key prefix of letters, digits, '.', '_', '-' and '/'")
        return f"{value}/" if value else ""

    @property
    def slack_days(self) -> float:
        if self.extend_slack_days is not None:
            return self.extend_slack_days
        return min(7.0, self.retention_days / 4)


TargetConfig = Annotated[MediaTargetConfig | S3TargetConfig, Field(discriminator="type")]


# scheduler and notifications --------------------------------------------------------------------------

LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class SchedulerConfig(Strict):
    """`backupctl scheduler run`: catch-up policy, stopping, locks, metrics and logs of the daemon."""

    empty_allowed: ClassVar[frozenset[str]] = frozenset({"metrics_textfile", "metrics_listen"})

    misfire_grace_seconds: float = Field(default=6 * 3600, ge=1)   # a run missed by less still runs (once)
    stop_grace_seconds: float = Field(default=300, ge=0)           # SIGTERM: let running jobs finish this long
    lock_wait_seconds: float = Field(default=4 * 3600, ge=0)       # scheduled runs queue for the repository lock
    max_parallel_jobs: int = Field(default=2, ge=1, le=16)
    metrics_textfile: Path | None = Path("var/metrics/backupctl.prom")   # "" = none
    metrics_listen: str | None = None        # "127.0.0.1:9898": serve /metrics on loopback
    log_format: Literal["text", "json"] = "text"
    stale_factor: float = Field(default=1.5, gt=1)   # stale when the last success is older than factor x interval

    @field_validator("metrics_textfile", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("metrics_listen")
    @classmethod
    def _loopback(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        host, sep, port = value.rpartition(":")
        host = host.strip("[]")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("expected HOST:PORT such as '127.0.0.1:9898'")
        if host not in LOOPBACK_HOSTS:
            raise ValueError("expected a loopback address (127.0.0.1, ::1 or localhost); put a TLS proxy in front "
                             "to expose metrics further")
        return value


NotifyEvent = Literal["start", "success", "failure"]


class NotifyConfig(Strict):
    """Where a job's outcome is reported. URLs carry tokens: they come from a file (0600) or an environment
    variable, never from this file, and are never logged in full."""

    webhook_url_file: Path | None = None
    webhook_url_env: str | None = None
    webhook_events: list[NotifyEvent] = ["failure"]
    ping_url_file: Path | None = None        # healthchecks-style: URL/start, URL (success), URL/fail
    ping_url_env: str | None = None
    email_to: list[str] = []
    email_events: list[NotifyEvent] = ["failure"]
    timeout_seconds: float = Field(default=10, gt=0, le=300)
    retries: int = Field(default=3, ge=0, le=10)           # after the first attempt
    backoff_seconds: float = Field(default=2, ge=0, le=600)  # doubled after each failed attempt

    @model_validator(mode="after")
    def _one_source_each(self) -> NotifyConfig:
        if self.webhook_url_file is not None and self.webhook_url_env is not None:
            raise ValueError("set webhook_url_file or webhook_url_env, not both")
        if self.ping_url_file is not None and self.ping_url_env is not None:
            raise ValueError("set ping_url_file or ping_url_env, not both")
        return self

    def merged(self, override: NotifyConfig | None) -> NotifyConfig:
        """These defaults with the fields `override` sets explicitly (a job's [notify] over the global one)."""
        if override is None:
            return self
        return self.model_copy(update={k: getattr(override, k) for k in override.model_fields_set})


class SmtpConfig(Strict):
    """Optional e-mail for notifications (`email_to` in [notify])."""

    host: str
    port: int = Field(default=587, gt=0, lt=65536)
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password_file: Path | None = None
    password_env: str | None = None
    sender: str
    timeout_seconds: float = Field(default=30, gt=0)


class AuditRules(Strict):
    """Anomaly rules evaluated as audit records are written; each match is a Security Alert (docs/audit.md)."""

    watched: list[str] = ["restore", "find", "lookup"]    # words of actions that read patient data
    working_hours: str = Field(default="07:00-19:00", pattern=r"^\d{2}:\d{2}-\d{2}:\d{2}$")
    working_days: list[int] = [1, 2, 3, 4, 5]             # ISO weekdays, 1 = Monday
    timezone: str = "UTC"
    max_per_hour: int = Field(default=20, ge=1)           # watched actions by one actor in an hour
    max_failed_auth_per_hour: int = Field(default=3, ge=1)
    alert_actions: list[str] = ["keys export-kit", "keys import-kit"]   # recovery kits hold every key
    enabled: bool = True


class AuditConfig(Strict):
    """The tamper-evident audit log: checkpoints in S3, forwarding to an ATNA repository (docs/audit.md)."""

    checkpoint_target: str | None = None      # an s3 target whose Object Lock bucket keeps signed checkpoints
    forward: str | None = Field(default=None, pattern=r"^(tls|tcp|udp)://[^/\s:]+:\d{1,5}$")
    ca_bundle: Path | None = None             # CA of the receiver (tls://); default: the system's
    client_cert: Path | None = None           # PEM with certificate and key, where the repository wants mTLS
    include_patient_ids: bool = False         # only for a repository cleared for them; else HMAC pseudonyms
    site: str = "backupctl"                   # AuditEnterpriseSiteID of the DICOM audit messages
    rules: AuditRules = AuditRules()


def _check_schedule(schedule: str | None, timezone: str) -> None:
    """A `schedule` is a cron expression valid in `timezone` (or none)."""
    if schedule is not None:
        try:
            validate_cron(schedule, timezone)
        except ValueError as exc:
            raise ValueError(f"schedule: expected {exc}") from None


class ReportConfig(Strict):
    """The drill report's header and its scheduled delivery (`[report]`)."""

    site: str | None = None                  # shown in the report's header, e.g. "St. Mary's Hospital, PACS"
    owner: str | None = None                 # who answers for the backups, e.g. "IT operations, J. Smith"
    period_days: float = Field(default=30, gt=0)   # a scheduled report covers the drills of this many days
    schedule: str | None = None              # cron: when the report is made and mailed
    timezone: str = "UTC"
    email_to: list[str] = []                 # managers who receive it (through [smtp])
    pdf: bool | None = None                  # a PDF beside the HTML (chromium): true = required, unset = if installed

    @model_validator(mode="after")
    def _cron(self) -> ReportConfig:
        _check_schedule(self.schedule, self.timezone)
        return self


class ConsoleConfig(Strict):
    """The web console (`[console]`, docs/console.md): HTTPS only; without cert_file/key_file a self-signed
    certificate is made under the state folder on first start."""

    host: str = "127.0.0.1"
    port: int = Field(default=8443, ge=0, le=65535)
    cert_file: Path | None = None
    key_file: Path | None = None
    idle_timeout_seconds: float = Field(default=900, gt=0)         # a session unused this long ends
    absolute_timeout_seconds: float = Field(default=28800, gt=0)   # and every session ends after this long
    max_failures: int = Field(default=5, ge=1)                     # failed sign-ins in a row lock the account
    lockout_seconds: float = Field(default=900, gt=0)
    login_attempts_per_minute: int = Field(default=20, ge=1)       # per client address, ok or not

    @model_validator(mode="after")
    def _pair(self) -> ConsoleConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file: give both or neither")
        return self


class Settings(Strict):
    catalog: CatalogConfig = CatalogConfig()
    staging: StagingConfig = StagingConfig()
    paths: PathsConfig = PathsConfig()
    signing: SigningConfig = SigningConfig()
    verify: VerifyConfig = VerifyConfig()
    targets: dict[str, TargetConfig] = {}
    scheduler: SchedulerConfig = SchedulerConfig()
    notify: NotifyConfig = NotifyConfig()     # defaults for every job and drill; their [notify] overrides
    smtp: SmtpConfig | None = None
    audit: AuditConfig = AuditConfig()
    report: ReportConfig = ReportConfig()
    suspect: SuspectConfig = SuspectConfig()
    console: ConsoleConfig = ConsoleConfig()

    @field_validator("targets")
    @classmethod
    def _target_names(cls, targets: dict[str, Any]) -> dict[str, Any]:
        for name in targets:
            _check_name(name)
        return targets


# jobs/*.toml -----------------------------------------------------------------------------------------


class Retention(Strict):
    """As `restic forget`: how many of the newest snapshots to keep per period."""

    keep_last: int | None = Field(default=None, ge=0)
    keep_hourly: int | None = Field(default=None, ge=0)
    keep_daily: int | None = Field(default=None, ge=0)
    keep_weekly: int | None = Field(default=None, ge=0)
    keep_monthly: int | None = Field(default=None, ge=0)
    keep_yearly: int | None = Field(default=None, ge=0)

    def is_empty(self) -> bool:
        return all(v is None for v in self.model_dump().values())


HookCommand = str | Annotated[list[str], Field(min_length=1)]


class Hooks(Strict):
    """Commands around a job's run, as borgmatic and Kopia offer: a string runs through /bin/sh, a list is
    run as is. Each gets the job's facts in BACKUPCTL_* environment variables and `timeout_seconds`."""

    before: list[HookCommand] = []           # before the sources are read; a failure aborts the run
    after: list[HookCommand] = []            # after a successful snapshot
    on_error: list[HookCommand] = []         # after a failed run (best effort)
    timeout_seconds: float = Field(default=300, gt=0)


class OrthancSource(Strict):
    """A local Orthanc (SQLite index) backed up consistently: stop, copy index + config, hard-link the
    storage area, start again; the PACS is always restarted. See docs/pacs.md."""

    config: Path = Path("/etc/orthanc")       # the configuration folder (or single file)
    storage_dir: Path = Path("/var/lib/orthanc/db-v6")
    index_dir: Path | None = None            # default: storage_dir (as the Debian package)
    url: str = "http://127.0.0.1:8042"       # REST API: readiness after restart, shutdown without a unit
    credentials_file: Path | None = None     # 'username:password' (0600) when authentication is on
    credentials_env: str | None = None       # or an environment variable holding 'username:password'
    verify_tls: bool = True
    systemd_unit: str | None = None          # stop/start with systemctl
    stop_command: list[str] | None = None    # else REST POST /tools/shutdown
    start_command: list[str] | None = None   # must return once Orthanc is launched (a service start)
    command_timeout_seconds: float = Field(default=120, gt=0)
    max_downtime_seconds: float = Field(default=300, gt=0)
    snapshot_dir: Path | None = None         # same filesystem as storage_dir; default <state>/pacs/<job>

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/@\s]+(/.*)?$", value):
            raise ValueError("an http(s) URL without user-info, like http://127.0.0.1:8042 "
                             "(credentials go in credentials_file)")
        return value

    @model_validator(mode="after")
    def _start_stop(self) -> OrthancSource:
        if self.systemd_unit is None and self.start_command is None:
            raise ValueError("set systemd_unit, or start_command (Orthanc must always be started again)")
        if self.systemd_unit is not None and (self.start_command or self.stop_command):
            raise ValueError("set either systemd_unit or stop_command/start_command, not both")
        if self.credentials_file is not None and self.credentials_env is not None:
            raise ValueError("set credentials_file or credentials_env, not both")
        return self


class Job(Strict):
    name: str
    sources: list[Path] = []                 # folders/files; may be empty when `orthanc` is set
    orthanc: OrthancSource | None = None
    hooks: Hooks = Hooks()
    excludes: list[str] = []
    targets: list[str] = []
    schedule: str | None = None              # cron text
    timezone: str = "UTC"
    retention: Retention = Retention()
    tags: list[str] = []
    expected_interval_hours: float | None = Field(default=None, gt=0)
    rpo_hours: float | None = Field(default=None, gt=0)   # the newest snapshot may be this old at most
    notify: NotifyConfig | None = None

    _name = field_validator("name")(classmethod(lambda cls, v: _check_name(v)))

    @model_validator(mode="after")
    def _cron(self) -> Job:
        if not self.sources and self.orthanc is None:
            raise ValueError("set sources (a list of paths) or an [orthanc] source")
        _check_schedule(self.schedule, self.timezone)
        return self


# restore_drills/*.toml -------------------------------------------------------------------------------


class Drill(Strict):
    name: str
    job: str
    snapshot: str = "latest"                 # latest | random:<days> | <snapshot id>
    copy_from: str = "staging"               # staging | <target name>
    scope: str = "all"                       # all | sample:<K> | studies
    studies: list[str] = []
    depth: Literal["hash", "dicom", "pacs"] = "dicom"
    rto_minutes: float = Field(default=60, gt=0)
    rpo_hours: float | None = Field(default=None, gt=0)   # restored data this old at most; default: the job's
    schedule: str | None = None
    timezone: str = "UTC"
    scratch: Path | None = None              # default: <state>/scratch; never inside a job's source
    seed: int | None = None                  # fixes the random choices (snapshot, sample); default: new each run
    decode_files: int = Field(default=3, ge=0)   # DICOM files whose pixel data is also decoded (depth dicom/pacs)
    notify: NotifyConfig | None = None

    _name = field_validator("name")(classmethod(lambda cls, v: _check_name(v)))

    @field_validator("snapshot")
    @classmethod
    def _snapshot(cls, value: str) -> str:
        if value == "latest" or re.fullmatch(r"random:\d+", value) or re.fullmatch(r"[0-9a-f]{8,64}", value):
            return value
        raise ValueError("'latest', 'random:<days>' or a snapshot id (8 to 64 hex digits)")

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: str) -> str:
        if value in ("all", "studies") or re.fullmatch(r"sample:[1-9]\d*", value):
            return value
        raise ValueError("'all', 'sample:<K>' or 'studies' (with a studies list)")

    @model_validator(mode="after")
    def _cron(self) -> Drill:
        _check_schedule(self.schedule, self.timezone)
        if self.scope == "studies" and not self.studies:
            raise ValueError("scope 'studies' needs a non-empty studies list")
        return self


# loading ---------------------------------------------------------------------------------------------


class Config:
    """The whole validated configuration: settings, jobs and drills, with paths made absolute."""

    def __init__(self, path: Path, settings: Settings, jobs: dict[str, Job], drills: dict[str, Drill],
                 safe_excludes: dict[str, list[str]] | None = None):
        self.path = path
        self.base = path.parent
        self.settings = settings
        self.jobs = jobs
        self.drills = drills
        # per job: what backupctl excludes from a system-root source, in words (the patterns are in `excludes`)
        self.safe_excludes = safe_excludes or {}

    def resolve(self, p: Path) -> Path:
        p = p.expanduser()
        return p if p.is_absolute() else (self.base / p)

    @cached_property
    def catalog_path(self) -> Path:
        return self.resolve(self.settings.catalog.path)

    @cached_property
    def staging_repository(self) -> Path:
        return self.resolve(self.settings.staging.repository)

    @cached_property
    def state_dir(self) -> Path:
        return self.resolve(self.settings.paths.state)

    @cached_property
    def signing_key(self) -> Path:
        return self.resolve(self.settings.signing.key_file)

    def job(self, name: str) -> Job:
        try:
            return self.jobs[name]
        except KeyError:
            known = ", ".join(sorted(self.jobs)) or "none"
            raise ConfigError(f"no job named '{name}'{did_you_mean(name, self.jobs)} (jobs: {known})",
                              hint=f"add {self.settings.paths.jobs}/{name}.toml") from None

    def drill(self, name: str) -> Drill:
        try:
            return self.drills[name]
        except KeyError:
            known = ", ".join(sorted(self.drills)) or "none"
            raise ConfigError(f"no drill named '{name}'{did_you_mean(name, self.drills)} (drills: {known})") from None

    def target(self, name: str) -> MediaTargetConfig | S3TargetConfig:
        try:
            return self.settings.targets[name]
        except KeyError:
            known = ", ".join(sorted(self.settings.targets)) or "none"
            raise ConfigError(f"no target named '{name}'{did_you_mean(name, self.settings.targets)} "
                              f"(targets: {known})", hint=f"add [targets.{name}] to {self.path.name}") from None


def config_path(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else DEFAULT_CONFIG


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds, through Optional, lists and Annotated."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The setting names valid where `loc` (a pydantic error location, without its last part) points."""
    current: type[BaseModel] | None = model
    for part in loc:
        if part in ("media", "s3"):          # the tag of a discriminated target
            current = MediaTargetConfig if part == "media" else S3TargetConfig
        elif current is not None and isinstance(part, str) and part in current.model_fields:
            current = _model_in(current.model_fields[part].annotation) or current
    return list(current.model_fields) if current is not None else []


def _describe(err: dict[str, Any], model: type[BaseModel] | None = None) -> str:
    loc = ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and p in ("media", "s3")))
    msg = err["msg"].removeprefix("Value error, ")
    kind = err["type"]
    if kind == "empty":   # raised for the model, so the field's name comes in the message
        return f"{loc}.{err['msg']}" if loc else err["msg"]
    if kind == "missing":
        msg = "is required"
    elif kind == "extra_forbidden":
        hint = did_you_mean(str(err["loc"][-1]), _fields_at(model, err["loc"][:-1])) if model else ""
        msg = f"is not a known setting{hint or ' (check its spelling)'}"
    elif "input" in err and kind not in ("value_error",):
        msg = f"{msg} (got {err['input']!r})"
    elif kind == "value_error":
        msg = msg if msg.startswith(("expected", "set ", "scope", "schedule")) else f"expected {msg}"
    return f"{loc}: {msg}" if loc else msg


def _read_toml(path: Path, display: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_CONFIG_BYTES:
                raise ConfigError(f"{display}: {size} bytes; a configuration file over 1 MiB is refused",
                                  hint="is this the right file?")
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{display}: file not found",
                          hint="run `backupctl init` or pass --config / set BACKUPCTL_CONFIG") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{display}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{display}: cannot read: {exc.strerror}") from None


def _validate(model: type[BaseModel], data: dict[str, Any], display: str, errors: list[str]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors.extend(f"{display}: {_describe(e, model)}" for e in exc.errors())
        return None


def load_config(path: Path | None = None) -> Config:
    """Load and validate everything; raise ConfigError whose message lists the first problem."""
    config, errors = collect_config(path)
    if errors:
        more = f" (+{len(errors) - 1} more; run `backupctl config check`)" if len(errors) > 1 else ""
        raise ConfigError(errors[0] + more)
    assert config is not None
    return config


def collect_config(path: Path | None = None, secrets: bool = False) -> tuple[Config | None, list[str]]:
    """Validate everything and return every problem found, one line each (for `config check`). With `secrets`,
    every secret file the config names is checked too (each command checks the ones it reads, when it reads)."""
    path = config_path(path).absolute()
    display = _display(path)
    errors: list[str] = []
    settings = _validate(Settings, _read_toml(path, display), display, errors)
    if settings is None:
        return None, errors
    base = path.parent
    errors += _folder_problems(path, settings)
    jobs = _load_dir(base / settings.paths.jobs, Job, errors, skip=path)
    drills = _load_dir(base / settings.paths.drills, Drill, errors, skip=path)
    for job in jobs.values():
        for t in job.targets:
            if t not in settings.targets:
                errors.append(f"{_display(base / settings.paths.jobs / (job.name + '.toml'))}: targets: "
                              f"'{t}' is not a target of {path.name}{did_you_mean(t, settings.targets)} "
                              f"(known: {', '.join(settings.targets) or 'none'})")
    safe_excludes: dict[str, list[str]] = {}
    for name, job in list(jobs.items()):
        where = _display(base / settings.paths.jobs / (name + ".toml"))
        problems, added, shown = guard_sources(base, settings, jobs, job)
        errors += [f"{where}: sources: {problem}" for problem in problems]
        if added:
            safe_excludes[name] = shown
            jobs[name] = job.model_copy(update={"excludes": [*job.excludes, *added]})
    for drill in drills.values():
        where = _display(base / settings.paths.drills / (drill.name + ".toml"))
        if drill.job not in jobs:
            errors.append(f"{where}: job: '{drill.job}' is not a job in {settings.paths.jobs}/"
                          f"{did_you_mean(drill.job, jobs)}")
        if drill.copy_from != "staging" and drill.copy_from not in settings.targets:
            errors.append(f"{where}: copy_from: expected 'staging' or a target name (got '{drill.copy_from}')"
                          f"{did_you_mean(drill.copy_from, ['staging', *settings.targets])}")
        if drill.scratch is not None:
            errors += [f"{where}: scratch: {problem}" for problem in
                       scratch_overlaps(base / drill.scratch.expanduser(), base, settings, jobs)]
    errors += _email_without_smtp(path, settings, jobs, drills)
    checkpoint = settings.audit.checkpoint_target
    if checkpoint is not None and not isinstance(settings.targets.get(checkpoint), S3TargetConfig):
        errors.append(f"{display}: audit.checkpoint_target: expected the name of an s3 target (got '{checkpoint}')")
    config = Config(path, settings, jobs, drills, safe_excludes)
    # the rule every secret reader applies (0600/0400, the user's own), checked now rather than at 2 a.m.
    if secrets:
        from backupctl.secrets import secret_file_problems

        errors += [f"{display}: {problem}" for problem in secret_file_problems(config)]
    return config, errors


def _folder_problems(path: Path, settings: Settings) -> list[str]:
    """`paths.jobs` and `paths.drills` must be folders of their own: the config's folder holds backupctl.toml,
    which must never be read as a job or a drill."""
    base = path.parent.resolve()
    jobs, drills = (Path(os.path.realpath(base / p.expanduser())) for p in (settings.paths.jobs, settings.paths.drills))
    problems = [f"{_display(path)}: paths.{key}: expected a folder of its own, not the folder of {path.name}"
                for key, folder in (("jobs", jobs), ("drills", drills)) if folder == base]
    if jobs == drills:
        problems.append(f"{_display(path)}: paths.drills: expected a folder other than paths.jobs ({jobs})")
    return problems


def scratch_overlaps(scratch: Path, base: Path, settings: Settings, jobs: dict[str, Job]) -> list[str]:
    """Why `scratch` may not hold a drill's restore: it lies inside (or holds) live data."""
    scratch = Path(os.path.abspath(scratch))
    live = [(f"source of job {job.name}", base / src) for job in jobs.values() for src in job.sources]
    live.append(("the staging repository", base / settings.staging.repository))
    live += [(f"the mount of target {name}", base / t.mount) for name, t in settings.targets.items()
             if isinstance(t, MediaTargetConfig)]
    problems = []
    for what, path in live:
        path = Path(os.path.abspath(path.expanduser()))
        if scratch == path or scratch.is_relative_to(path) or path.is_relative_to(scratch):
            problems.append(f"{scratch} overlaps {what} ({path}); a drill never writes into live data")
    return problems


# A source of one of these is a whole system (or a whole top-level tree of it): it is allowed, since a bare-
# metal backup is a real need, but only with the excludes below; any other source that holds backupctl's own
# state is refused, since its owner surely did not mean to put keys and repositories into the snapshots.
SYSTEM_ROOTS = ("/", "/boot", "/etc", "/home", "/media", "/mnt", "/opt", "/root", "/srv", "/usr", "/var")
# pseudo and volatile filesystems: never data, and /proc alone would make restic read every process's memory map
SYSTEM_EXCLUDES = ("/proc", "/sys", "/dev", "/run", "/tmp")
# <state>/manifests/<job>/.backupctl-manifest holds the signed manifest a backup adds to its snapshot
MANIFESTS_FOLDER = "manifests"


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path.expanduser()))


def protected_paths(base: Path, settings: Settings, jobs: dict[str, Job]) -> list[tuple[str, Path]]:
    """What no snapshot may hold: backupctl's own state and secrets, the media it writes, restic's cache.

    Each is (what, absolute path, symlinks resolved)."""
    def at(p: Path) -> Path:
        return _real(p if p.expanduser().is_absolute() else base / p)

    staging, state = settings.staging, settings.paths.state
    items: list[tuple[str, Path]] = [
        ("the staging repository", at(staging.repository)),
        ("the catalog", at(settings.catalog.path)),
        ("the state folder", at(state)),
        ("the restic cache", at(staging.cache_dir) if staging.cache_dir else at(state) / "restic-cache"),
    ]
    secret_files = [staging.password_file, settings.signing.key_file]
    for key in list(secret_files):
        if key is not None and at(key).parent != _real(base):   # a folder of secrets, not the config's folder
            items.append(("the secrets folder", at(key).parent))
    for name, target in settings.targets.items():
        if isinstance(target, MediaTargetConfig):
            items.append((f"the mount of media target {name}", at(target.mount)))
        else:
            secret_files += [c.file for c in (target.credentials, target.expire_credentials) if c is not None]
    notifies = [settings.notify, *(j.notify for j in jobs.values() if j.notify)]
    secret_files += [f for n in notifies for f in (n.webhook_url_file, n.ping_url_file)]
    secret_files += [settings.smtp.password_file if settings.smtp else None]
    secret_files += [j.orthanc.credentials_file for j in jobs.values() if j.orthanc]
    secret_files += [settings.audit.client_cert]   # the audit forwarding's certificate carries its key
    items += [("the secret file", at(f)) for f in secret_files if f is not None]
    unique: dict[Path, str] = {}
    for what, path in items:
        unique.setdefault(path, what)
    return [(what, path) for path, what in unique.items()]


def guard_sources(base: Path, settings: Settings, jobs: dict[str, Job],
                  job: Job) -> tuple[list[str], list[str], list[str]]:
    """(problems, excludes to add, what they exclude in words) for `job`'s sources (see SYSTEM_ROOTS).

    A source inside a protected path, or holding one without being a system root, is a problem naming both
    paths; a system-root source gets restic excludes for the protected paths and pseudo-filesystems in it."""
    protected = protected_paths(base, settings, jobs)
    problems: list[str] = []
    added: list[str] = []
    shown: list[str] = []
    for source in job.sources:
        given = source.expanduser() if source.expanduser().is_absolute() else base / source
        real = _real(given)
        # one line per source: the closest protected path around it, else the first one it holds
        around = [(what, path) for what, path in protected if real.is_relative_to(path)]
        held = [(what, path) for what, path in protected if path.is_relative_to(real)]
        if around:
            what, path = max(around, key=lambda item: len(item[1].parts))
            problems.append(f"{given} lies inside {what} {path}; backupctl never backs up its own state")
        elif held and str(real) not in SYSTEM_ROOTS:
            what, path = held[0]
            problems.append(f"{given} contains {what} {path}; list the folders beside it as sources instead")
        if str(real) in SYSTEM_ROOTS:
            inside = [Path(p) for p in SYSTEM_EXCLUDES if Path(p).is_relative_to(real)]
            inside += [path for _, path in protected if path.is_relative_to(real)]
            # the repository inside the state folder goes with the state
            inside = [p for p in inside if not any(p != q and p.is_relative_to(q) for q in inside)]
            for path in inside:
                words, patterns = _exclude_patterns(path, base, settings, jobs, job)
                if words not in shown:
                    shown.append(words)
                added += [p for p in patterns if p not in added and p not in job.excludes]
    return problems, added, shown


def _exclude_patterns(path: Path, base: Path, settings: Settings, jobs: dict[str, Job],
                      job: Job) -> tuple[str, list[str]]:
    """The restic patterns that keep `path` out of a snapshot, and how to say so."""
    def at(p: Path) -> Path:
        return _real(p if p.expanduser().is_absolute() else base / p)

    if path == at(settings.catalog.path):   # SQLite's companions hold the same rows
        return str(path), [str(path), f"{path}-wal", f"{path}-shm", f"{path}-journal"]
    if path == at(settings.paths.state):
        # the job's signed manifest is written under the state and handed to restic as a target of its own,
        # and restic applies excludes to targets too: everything of the state but that folder's chain
        manifests = path / MANIFESTS_FOLDER
        return (f"{path} (all but {MANIFESTS_FOLDER}/{job.name})",
                [*_all_but(path, MANIFESTS_FOLDER), *(str(manifests / other) for other in jobs if other != job.name)])
    return str(path), [str(path)]


def _all_but(folder: Path, keep: str) -> list[str]:
    """restic patterns for every entry of `folder` except `keep` (restic 0.14 has no negated patterns; a
    name differs from `keep` at its first differing character, or is a proper prefix of it, or is longer)."""
    assert re.fullmatch(r"[A-Za-z0-9_]+", keep), keep   # no character that is special in a class
    base = glob_escape(str(folder))
    patterns = [f"{base}/{keep[:i]}[^{keep[i]}]*" for i in range(len(keep))]
    patterns += [f"{base}/{keep[:i]}" for i in range(1, len(keep))]
    return [*patterns, f"{base}/{keep}?*"]


def glob_escape(text: str) -> str:
    """`text` as a restic pattern matching only itself."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def _email_without_smtp(path: Path, settings: Settings, jobs: dict[str, Job], drills: dict[str, Drill]) -> list[str]:
    """`email_to` anywhere needs an [smtp] section: say so now, not when the first failure is to be mailed."""
    if settings.smtp is not None:
        return []
    wanting = [(_display(path), settings.notify)]
    wanting += [(_display(path.parent / settings.paths.jobs / f"{n}.toml"), j.notify) for n, j in jobs.items()]
    wanting += [(_display(path.parent / settings.paths.drills / f"{n}.toml"), d.notify) for n, d in drills.items()]
    problems = [f"{where}: notify.email_to: needs an [smtp] section in {path.name}"
                for where, notify in wanting if notify is not None and notify.email_to]
    if settings.report.email_to:
        problems.append(f"{_display(path)}: report.email_to: needs an [smtp] section in {path.name}")
    return problems


def _load_dir(folder: Path, model: type[Job] | type[Drill], errors: list[str], skip: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if not folder.is_dir():
        return found
    for file in sorted(folder.glob("*.toml")):
        if file.resolve() == skip.resolve():
            continue
        display = _display(file)
        try:
            data = _read_toml(file, display)
        except ConfigError as exc:
            errors.append(exc.message)
            continue
        data.setdefault("name", file.stem)
        item = _validate(model, data, display, errors)
        if item is None:
            continue
        if item.name in found:
            errors.append(f"{display}: name: '{item.name}' is already used by another file")
            continue
        found[item.name] = item
    return found


def _display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
