"""The demo's `"pacs"` key: a real Orthanc backed up while it runs, restored and proven in fresh ones.

1. a service-like Orthanc (started by a script, authentication on) is populated through `storescu` with
   the demo's synthetic archive;
2. a job with an `[orthanc]` source backs it up (stop, copy, start): the downtime is measured;
3. the snapshot is restored and drilled at depth `pacs` (a throw-away Orthanc on the restored index:
   per-study REST and C-FIND checks against the archive, MD5 of every stored file);
4. meanwhile the snapshot is also sent with `restore --to-pacs` into another fresh Orthanc over REST, and
   the service Orthanc is stopped (all three mostly wait on Orthanc processes).

Every figure is measured. The service Orthanc is stopped at the end whatever happened.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from backupctl.actions.backup import run_backup
from backupctl.actions.restore import restore_snapshot
from backupctl.config import Config, load_config
from backupctl.errors import BackupctlError
from backupctl.pacs.drill import PacsDrillResult, expected_from_files, run_pacs_drill
from backupctl.pacs.ingest import iter_dicom_files
from backupctl.pacs.orthanc import OrthancProcess, find_dcmtk, find_orthanc
from backupctl.pacs.restore import PacsRestoreOutcome, restore_to_pacs
from backupctl.pacs.service import ServicePacs
from backupctl.progress import NullProgress, Progress

DEMO_PACS_JOB = "pacs-orthanc"


def demo_pacs(config: Config, workdir: Path, archive: Path, progress: Progress | None = None) -> dict[str, Any]:
    progress = progress or NullProgress()
    began = time.monotonic()
    try:
        find_orthanc()
        find_dcmtk("storescu")
        find_dcmtk("findscu")
    except BackupctlError as exc:
        return {"ok": False, "error": exc.one_line()}
    service = ServicePacs(workdir / "service", aet="DEMOPACS", modality="DEMOMODALITY")
    try:
        result = _run(config, workdir, archive, service.setup(), progress)
    except BackupctlError as exc:
        result = {"ok": False, "error": exc.one_line()}
    finally:
        service.kill()
    result["seconds"] = round(time.monotonic() - began, 3)
    return result


def _run(config: Config, workdir: Path, archive: Path, service: ServicePacs, progress: Progress) -> dict[str, Any]:
    service.start()
    files = list(iter_dicom_files(archive))
    t = time.monotonic()
    errors = service.store_files(files)
    storescu_seconds = time.monotonic() - t
    stored = service.client().counts()["instances"]
    if errors:
        return {"ok": False, "error": errors[0]}

    jobs = config.resolve(config.settings.paths.jobs)
    (jobs / f"{DEMO_PACS_JOB}.toml").write_text(f'name = "{DEMO_PACS_JOB}"\ntags = ["demo"]\n\n'
                                                 + service.orthanc_toml())
    config = load_config(config.path)
    backup = run_backup(config, DEMO_PACS_JOB, progress, replicate=False)
    copy = backup.pacs or {}
    running_again = service.pid() is not None and bool(service.client().system())

    snapshot = backup.snapshot_id or "latest"
    expected = expected_from_files(files)              # what the modality sent: the archive itself

    def drill_it() -> PacsDrillResult:
        restored = workdir / "restored"
        restore_snapshot(config, snapshot, restored)
        return run_pacs_drill(restored, workdir / "drill", expected=expected)

    def send_it() -> tuple[PacsRestoreOutcome, int]:
        with OrthancProcess(workdir / "fresh", name="demo-fresh", disposable=True) as fresh:
            pushed = restore_to_pacs(config, snapshot, fresh.url, credentials=fresh.credentials)
            return pushed, fresh.api().counts()["instances"]

    # three independent waits (mostly on Orthanc processes starting and stopping): side by side
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="demo-pacs") as pool:
        stopping = pool.submit(service.kill)
        drilled, sent = pool.submit(drill_it), pool.submit(send_it)
        drill = drilled.result()
        pushed, in_fresh = sent.result()
        stopping.result()

    ok = (stored == len(files) > 0 and backup.status == "success" and running_again and drill.ok
          and drill.matched_instances == stored and in_fresh == stored and pushed.ok)
    return {
        "ok": ok,
        "instances_stored": stored,
        "instances_restored": in_fresh,
        "instances_matched": drill.matched_instances,
        "downtime_seconds": round(copy.get("downtime_seconds") or 0.0, 3),
        "snapshot": backup.short_id,
        "orthanc_running_after_backup": running_again,
        "storescu_seconds": round(storescu_seconds, 3),
        "backup_seconds": round(backup.seconds, 3),
        "drill": {"ok": drill.ok, "mode": drill.mode, "findscu_studies": drill.findscu_studies,
                  "md5_checked": drill.md5_checked, "md5_failed": drill.md5_failed,
                  "phases": {k: round(v, 3) for k, v in drill.phases.items()},
                  "errors": [f"{f.kind} {f.subject}: {f.detail}" for f in drill.errors][:5]},
        "to_pacs": {"sent": pushed.sent, "stored": pushed.stored, "seconds": round(pushed.seconds, 3)},
    }
