"""The audit record of every CLI command, written where commands are dispatched so none can skip it.

`CommandWatch` wraps the `invoke` of each leaf command of the click tree built for this run, to learn which
command ran and with which arguments; `finish` turns the exit code into an outcome (ok, refused, failed,
partial, interrupted) and records it, after a `config change` record when a configuration file changed
since the last command. Help, --version and a bare group record nothing: nothing was done.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupctl.audit import take_notes
from backupctl.errors import BackupctlError

if TYPE_CHECKING:
    from backupctl.config import Config

log = logging.getLogger("backupctl.audit")

OUTCOME_OF_EXIT = {0: "ok", 2: "refused", 3: "partial", 130: "interrupted"}
# arguments that name what a command acted on; every other argument stays out of the log
ID_PARAMS = {"job": "job", "snapshot": "snapshot", "target": "target", "drill": "drill", "name": "name",
             "kind": "kind", "label": "label", "copy": "copy", "copy_from": "copy", "study": "studies",
             "studies": "studies", "from_target": "copy", "since": "since", "action": "filter_action"}
PATIENT_PARAMS = ("patient", "patient_id", "patients", "patient_name", "accession", "accession_number")
# commands that only read the catalog: no signed checkpoint after them (it costs a key load and an S3 PUT)
READ_ONLY = {"snapshots", "runs", "status", "list", "show", "check", "metrics", "copies", "demo"}


class CommandWatch:
    def __init__(self, command: Any) -> None:
        self.leaf: Any = None            # the click Context of the command that ran
        self.error: BaseException | None = None
        take_notes()                     # notes of an earlier command in this process are not this one's
        self._wrap(command)

    def _wrap(self, command: Any) -> None:
        # groups too: a group may act itself (`snapshots` lists when given no subcommand); a subcommand's
        # invoke runs inside its group's, so the innermost command is the one recorded
        sub = getattr(command, "commands", None)
        if isinstance(sub, dict):
            for child in sub.values():
                self._wrap(child)
        original = command.invoke

        def invoke(ctx: Any) -> Any:
            self.leaf = ctx
            return original(ctx)

        command.invoke = invoke

    def action(self) -> str | None:
        if type(self.error).__name__ == "NoArgsIsHelpError":
            return None                  # a bare group showed its help: nothing was done
        ctx = self._innermost()
        if ctx is None:
            return None
        words = ctx.command_path.split()[1:]
        return " ".join(words) or None

    def _innermost(self) -> Any:
        """The context of the innermost command reached: a subcommand whose arguments were refused never
        ran, but its group did."""
        ctx = self.leaf
        refused = getattr(self.error, "ctx", None)
        if refused is not None and (ctx is None or len(refused.command_path) > len(ctx.command_path)):
            return refused
        return ctx

    def ids(self) -> dict[str, Any]:
        params = getattr(self.leaf, "params", None) or {}
        out: dict[str, Any] = {}
        for key, value in params.items():
            if value is None or value is False or value == () or value == []:
                continue
            if key in PATIENT_PARAMS:
                out["patient"] = list(value) if isinstance(value, list | tuple) else value
            elif key == "to_pacs" and isinstance(value, str):
                from urllib.parse import urlsplit

                parts = urlsplit(value)   # scheme, host and port: never a user-info part
                out["to_pacs"] = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
            elif key in ID_PARAMS and isinstance(value, str | int | list | tuple):
                out[ID_PARAMS[key]] = list(value) if isinstance(value, list | tuple) else value
        return {**out, **take_notes()}

    def config_path(self) -> Path | None:
        """The --config of this run (the root context's), not a global left over from an earlier run."""
        ctx = self._innermost()
        value = ctx.find_root().params.get("config") if ctx is not None else None
        if value is None and self.action() == "init" and self.leaf is not None:
            # `init DIR` made its installation there: that is where its record belongs
            directory = self.leaf.params.get("directory")
            return Path(directory) / "backupctl.toml" if directory else None
        return Path(value) if value else None

    def finish(self, code: int) -> None:
        """Record the command's outcome; never raises (the command's own outcome stands)."""
        action = self.action()
        if action is None:
            return
        try:
            self._record(action, code, self.config_path())
        except Exception as exc:   # noqa: BLE001 - the audit must never turn a result into a traceback
            log.error("audit record of `%s` not written: %s: %s", action, type(exc).__name__, exc)

    def _record(self, action: str, code: int, config_path: Path | None) -> None:
        import backupctl.audit as audit
        from backupctl.config import load_config

        outcome = OUTCOME_OF_EXIT.get(code, "failed")
        details: dict[str, Any] = {"exit_code": code}
        if self.error is not None:
            details["error"] = type(self.error).__name__
        try:
            config = load_config(config_path)
        except BackupctlError:
            _record_without_config(action, outcome, details, config_path)
            return
        config_changes(config)
        audit.record(config, action, outcome, details=details, **self.ids())
        if action.split()[-1] not in READ_ONLY:
            audit.seal(config)


def _record_without_config(action: str, outcome: str, details: dict[str, Any], config_path: Path | None) -> None:
    """A command refused for a broken config still leaves its record, in the state folder the file names."""
    import tomllib

    from backupctl.audit.log import append, current_actor, log_path
    from backupctl.config import config_path as resolve_config_path

    path = resolve_config_path(config_path).absolute()
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError):
        if not path.exists():
            return                      # no installation here (`backupctl demo`, `init` elsewhere)
        raw = {}
    state = raw.get("paths", {}).get("state", "var") if isinstance(raw.get("paths"), dict) else "var"
    state_dir = Path(str(state)).expanduser()
    state_dir = state_dir if state_dir.is_absolute() else path.parent / state_dir
    if not state_dir.is_dir():
        return
    append(log_path(state_dir), action, outcome, actor=current_actor(), details={**details, "config": "invalid"})


DIGESTS_NAME = "config.digests"


def config_files(config: Config) -> list[Path]:
    files = [config.path]
    for folder in (config.settings.paths.jobs, config.settings.paths.drills):
        files += sorted(config.resolve(folder).glob("*.toml"))
    return files


def config_changes(config: Config) -> bool:
    """A `config change` record (with the SHA-256 of each file) when any configuration file changed."""
    import backupctl.audit as audit
    from backupctl.audit.log import audit_dir
    from backupctl.fsutil import atomic_write_bytes

    digests = {}
    for file in config_files(config):
        try:
            digests[_relative(file, config.base)] = hashlib.sha256(file.read_bytes()).hexdigest()
        except OSError:
            continue
    store = audit_dir(config.state_dir) / DIGESTS_NAME
    try:
        before = json.loads(store.read_bytes())
    except (OSError, ValueError):
        before = None
    if before == digests:
        return False
    changed = sorted(k for k in digests.keys() | (before or {}).keys()
                     if (before or {}).get(k) != digests.get(k))
    audit.record(config, "config change", "ok", details={"files": digests, "changed": changed,
                                                         "first_seen": before is None})
    atomic_write_bytes(store, json.dumps(digests, sort_keys=True).encode(), mode=0o600)
    return True


def _relative(file: Path, base: Path) -> str:
    try:
        return str(file.relative_to(base))
    except ValueError:
        return str(file)
