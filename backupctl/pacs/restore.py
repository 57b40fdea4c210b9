"""Restoring into a PACS: `restore SNAPSHOT --to-pacs URL` and `restore SNAPSHOT --as-orthanc DIR`.

`--to-pacs` restores the snapshot to scratch space (or `--to DIR`, kept), then sends every DICOM file to an
Orthanc over REST (concurrent, retried, each answer's Status checked). Works for any snapshot: plain file
archives and copies of an Orthanc (whose storage files are DICOM files). The PACS is checked (reachable,
credentials accepted) before anything is restored.

`--as-orthanc` lays out a whole Orthanc from a snapshot of an `orthanc` source (config, index, storage) in
an empty folder, with the configuration's StorageDirectory/IndexDirectory pointing there: ready to start
with `Orthanc DIR/config`. The original configuration files are kept beside as `*.json.orig`.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backupctl.actions.restore import check_restore_target, restore_snapshot
from backupctl.config import Config
from backupctl.errors import UsageError
from backupctl.pacs.drill import find_orthanc_layout
from backupctl.pacs.ingest import iter_dicom_files, send_files
from backupctl.pacs.orthanc import Credentials, OrthancClient
from backupctl.pacs.source import MARKER
from backupctl.progress import NullProgress, Progress


@dataclass
class PacsRestoreOutcome:
    snapshot_id: str
    source: str
    url: str                          # without credentials
    dicom_files: int
    sent: int
    stored: int
    already: int
    bytes: int
    retries: int
    restore_seconds: float
    send_seconds: float
    seconds: float
    kept: str | None = None           # where the restored files were kept (--to), else None
    rejected: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.rejected


def restore_to_pacs(config: Config, snapshot: str, url: str, *, credentials: Credentials | None = None,
                    includes: list[str] | None = None, copy: str = "staging", keep: Path | None = None,
                    concurrency: int = 4, retries: int = 3, verify_tls: bool = True,
                    progress: Progress | None = None) -> PacsRestoreOutcome:
    progress = progress or NullProgress()
    client = OrthancClient(url, credentials, verify_tls=verify_tls, timeout=120)
    client.system()                   # unreachable or refused credentials: say so before restoring
    if keep is not None:
        check_restore_target(keep, force=False)
    began = time.monotonic()
    with _restored_dicom(config, snapshot, keep, includes, copy, progress, "backupctl-to-pacs-") as (
            restored, files, target):
        report = send_files(client, files, total=len(files), concurrency=concurrency, retries=retries,
                            progress=progress)
    return PacsRestoreOutcome(
        restored.snapshot_id, copy, client.url, len(files), report.sent, report.stored, report.already,
        report.bytes, report.retries, restored.seconds, report.seconds, time.monotonic() - began,
        str(keep) if keep else None,
        [{"file": str(r.path.relative_to(target)), "reason": r.reason} for r in report.rejected])


# --as-orthanc ------------------------------------------------------------------------------------------


@dataclass
class AsOrthancOutcome:
    snapshot_id: str
    source: str
    to: Path
    config_dir: Path
    storage_files: int
    index_bytes: int
    seconds: float
    rewritten: list[str]              # configuration files whose paths were changed

    @property
    def start_command(self) -> str:
        return f"Orthanc {self.config_dir}"


def restore_as_orthanc(config: Config, snapshot: str, to: Path, *, copy: str = "staging",
                       progress: Progress | None = None) -> AsOrthancOutcome:
    check_restore_target(to, force=False)
    began = time.monotonic()
    to.mkdir(parents=True, exist_ok=True)
    staging = to / ".backupctl-restoring"      # inside `to`: the moves below are renames
    try:
        restored = restore_snapshot(config, snapshot, staging, copy=copy, progress=progress or NullProgress())
        layout = find_orthanc_layout(staging)
        if layout is None:
            raise UsageError(f"snapshot {restored.snapshot_id[:8]} is not a copy of an Orthanc "
                             f"(no {MARKER} in it)", hint="use --to DIR or --to-pacs URL for file archives")
        for name in ("config", "index", "storage", MARKER):
            if (layout / name).exists():
                os.replace(layout / name, to / name)
        (to / "storage").mkdir(exist_ok=True)
        rewritten = point_config_at(to / "config", storage=to / "storage", index=to / "index")
    except BaseException:
        _empty(to)                             # no half-laid-out Orthanc is left behind
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    files = sum(len(names) for _, _, names in os.walk(to / "storage"))
    index_bytes = sum(p.stat().st_size for p in (to / "index").glob("index*")) if (to / "index").exists() else 0
    return AsOrthancOutcome(restored.snapshot_id, copy, to, to / "config", files, index_bytes,
                            time.monotonic() - began, rewritten)


def _empty(folder: Path) -> None:
    for child in folder.iterdir() if folder.exists() else ():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def point_config_at(config_dir: Path, *, storage: Path, index: Path) -> list[str]:
    """Make the configuration's StorageDirectory/IndexDirectory point at the restored folders.

    Orthanc's files are JSON with comments; a file holding either key is rewritten as plain JSON (its
    original kept as `NAME.orig`, which Orthanc does not read). Without either key anywhere, a small
    `backupctl-restore.json` sets both."""
    config_dir.mkdir(parents=True, exist_ok=True)
    wanted = {"StorageDirectory": str(storage), "IndexDirectory": str(index)}
    rewritten: list[str] = []
    seen: set[str] = set()
    for path in sorted(config_dir.glob("*.json")):
        try:
            data = json.loads(strip_json_comments(path.read_text(encoding="utf-8")))
        except (ValueError, OSError):
            continue
        if not isinstance(data, dict) or not (set(wanted) & set(data)):
            continue
        seen |= set(wanted) & set(data)
        data.update({k: v for k, v in wanted.items() if k in data})
        mode = path.stat().st_mode & 0o777
        shutil.copy2(path, path.with_name(path.name + ".orig"))
        path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        path.chmod(mode)
        rewritten.append(path.name)
    missing = {k: v for k, v in wanted.items() if k not in seen}
    if missing:
        extra = config_dir / "backupctl-restore.json"
        extra.write_text(json.dumps(missing, indent=2) + "\n", encoding="utf-8")
        rewritten.append(extra.name)
    return rewritten


def strip_json_comments(text: str) -> str:
    """JSON with // and /* */ comments (as Orthanc accepts) to plain JSON; strings are left alone."""
    out: list[str] = []
    i, n, in_string = 0, len(text), False
    while i < n:
        c = text[i]
        if in_string:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            in_string = c != '"'
            i += 1
        elif c == '"':
            in_string = True
            out.append(c)
            i += 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            i = n if end < 0 else end + 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def outcome_dict(outcome: Any) -> dict[str, Any]:
    data = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(outcome).items()}
    data["ok"] = getattr(outcome, "ok", True)
    return data


# --to-dicom --------------------------------------------------------------------------------------------


@dataclass
class DicomRestoreOutcome:
    snapshot_id: str
    source: str
    target: str                       # AET@HOST:PORT
    dicom_files: int
    report: dict[str, Any]            # DimseReport as a dict
    query_back: list[dict[str, Any]]  # per study: expected, found, ok (empty when not asked)
    expected_from: str                # "manifest" (the catalog's copy of it) or "files" (no catalog row)
    restore_seconds: float
    seconds: float
    kept: str | None = None

    @property
    def ok(self) -> bool:
        r = self.report
        return (not r["refused"] and r["commitment"] in ("committed", "off")
                and all(row["ok"] for row in self.query_back))


def restore_to_dicom(config: Config, snapshot: str, target: str, *, calling_aet: str = "BACKUPCTL",
                     includes: list[str] | None = None, copy: str = "staging", keep: Path | None = None,
                     commitment: bool = True, commitment_port: int | None = None,
                     commitment_timeout: float = 60.0, query_back: bool = True, retries: int = 3,
                     tls: ssl.SSLContext | None = None, progress: Progress | None = None) -> DicomRestoreOutcome:
    """Restore to scratch (or `keep`), C-STORE every DICOM file to `target` (AET@HOST:PORT), ask for storage
    commitment, then C-FIND each study back. The target is C-ECHOed before anything is restored."""
    from dataclasses import asdict

    from backupctl.pacs.dimse import DicomTarget, echo, send_dimse

    progress = progress or NullProgress()
    peer = DicomTarget.parse(target)
    echo(peer, calling_aet=calling_aet, retries=min(retries, 1), tls=tls)
    if keep is not None:
        check_restore_target(keep, force=False)
    began = time.monotonic()
    with _restored_dicom(config, snapshot, keep, includes, copy, progress, "backupctl-to-dicom-") as (
            restored, files, where):
        report = send_dimse(files, peer, calling_aet=calling_aet, commitment=commitment,
                            commitment_port=commitment_port, commitment_timeout=commitment_timeout,
                            retries=retries, progress=progress, tls=tls)
        for row in report.refused:
            row["file"] = str(Path(row["file"]).relative_to(where))
    rows: list[dict[str, Any]] = []
    expected, expected_from = _expected_instances(config, restored.snapshot_id, report.per_study)
    if query_back and expected:
        from backupctl.pacs.dimse import query_studies

        rows = query_studies(peer, expected, calling_aet=calling_aet, tls=tls)
    return DicomRestoreOutcome(restored.snapshot_id, copy, str(peer), len(files), asdict(report), rows,
                               expected_from, restored.seconds, time.monotonic() - began,
                               str(keep) if keep else None)


def _expected_instances(config: Config, snapshot_id: str, in_files: dict[str, int]) -> tuple[dict[str, int], str]:
    """Instances per restored study as the snapshot's manifest counts them (the catalog keeps its figures), so
    a file lost between backup and PACS shows; the restored files' own count when the catalog lacks them."""
    if not config.catalog_path.exists():
        return in_files, "files"
    from backupctl.catalog import open_catalog
    from backupctl.catalog.verify import studies_of

    with open_catalog(config.catalog_path) as catalog:
        recorded = {r["study_uid"]: int(r["instances"]) for r in studies_of(catalog, snapshot_id)}
    if not recorded or not set(in_files) <= set(recorded):
        return in_files, "files"
    return {study: recorded[study] for study in in_files}, "manifest"


@contextmanager
def _restored_dicom(config: Config, snapshot: str, keep: Path | None, includes: Any, copy: Any,
                    progress: Progress, prefix: str) -> Iterator[tuple[Any, list[Path], Path]]:
    """The snapshot (or its `includes`) restored into `keep`, or into scratch space removed afterwards, and
    its DICOM files; a restore that holds none is bad input."""
    scratch_root = config.state_dir / "scratch"
    scratch_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=prefix, dir=scratch_root) as tmp:
        where = keep or Path(tmp) / "restored"
        restored = restore_snapshot(config, snapshot, where, includes=includes, copy=copy, progress=progress)
        files = list(iter_dicom_files(where))
        if not files:
            raise UsageError(f"snapshot {restored.snapshot_id[:8]} holds no DICOM files"
                             + (" under the --include paths" if includes else ""))
        yield restored, files, where
