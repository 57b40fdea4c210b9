"""The demo's `find` and `dry_run` steps: a study found by what an admin is handed, restored and verified;
then what restoring it from the drilled copy would take, said beforehand and measured after.

The demo knows its synthetic archive, so it reads one file's Patient ID and accession number as an admin
would be handed them; the figures it reports hold no identifier.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from backupctl.actions.find import StudyQuery, find_studies, plan_restore, snapshot_holding_all
from backupctl.catalog import open_catalog
from backupctl.catalog.db import catalog_image
from backupctl.verify.study import restore_studies

if TYPE_CHECKING:
    from backupctl.demo import DemoContext


def _handed(archive: Path) -> dict[str, str]:
    """What the admin is given: one study's Patient ID, accession number and name, from one of its files."""
    import pydicom

    first = min(archive.rglob("*.dcm"))
    ds = pydicom.dcmread(first, stop_before_pixels=True)
    return {"patient_id": str(ds.PatientID), "accession": str(ds.AccessionNumber),
            "name": str(ds.PatientName), "study": str(ds.StudyInstanceUID)}


def step_find(ctx: DemoContext) -> dict[str, Any]:


    config = ctx.config
    assert config is not None and ctx.archive is not None
    handed = _handed(ctx.archive)
    started = time.monotonic()
    with open_catalog(config.catalog_path) as catalog:
        by_id = find_studies(config, catalog, StudyQuery(patient_id=handed["patient_id"]), job=ctx.job)
        by_acc = find_studies(config, catalog, StudyQuery(accession=handed["accession"]), job=ctx.job)
        # the name as typed in a hurry: a prefix, another case, a wildcard
        pattern = handed["name"][:6].lower() + "*" + handed["name"][-2:]
        by_name = find_studies(config, catalog, StudyQuery(patient_name=pattern), job=ctx.job)
        find_seconds = time.monotonic() - started
        found = [m.study_uid for m in by_acc.matches]
        if found != [handed["study"]]:
            return {"ok": False, "error": f"the accession number found {len(found)} studies, not its own"}
        outcome = restore_studies(config, catalog, found, ctx.workdir / "found-study",
                                  snapshot=snapshot_holding_all(by_acc), progress=ctx.progress)
    id_studies = {m.study_uid for m in by_id.matches}
    in_clear = handed["patient_id"].encode() in catalog_image(config.catalog_path)
    ok = (outcome.verified and handed["study"] in id_studies and {m.study_uid for m in by_name.matches} == id_studies
          and outcome.files == by_acc.matches[0].instances and not in_clear)
    return {"ok": ok, "by_patient_id": {"studies": len(id_studies)},
            "by_accession": {"studies": len(found), "study_uid": found[0]},
            "by_name_wildcard": {"studies": len(by_name.matches), "manifests_read": by_name.manifests_read},
            "find_seconds": round(find_seconds, 3), "restored_files": outcome.files, "restored_bytes": outcome.bytes,
            "restore_seconds": round(outcome.seconds, 3), "verified": outcome.verified, "checks": outcome.checks(),
            "catalog_holds_id_in_clear": in_clear}


def step_dry_run(ctx: DemoContext) -> dict[str, Any]:
    """`restore --accession ... --dry-run` from the copy the drill read: the expected time comes from that
    drill; the same restore is then run, so the estimate stands beside what it took."""

    from backupctl.drills.demo import demo_copy

    config = ctx.config
    assert config is not None and ctx.archive is not None
    copy = demo_copy(ctx)
    handed = _handed(ctx.archive)
    with open_catalog(config.catalog_path) as catalog:
        found = find_studies(config, catalog, StudyQuery(accession=handed["accession"]), job=ctx.job)
        snapshot = snapshot_holding_all(found)
        studies = [m.study_uid for m in found.matches]
        plan = plan_restore(catalog, snapshot, copy, studies)
        done = restore_studies(config, catalog, studies, ctx.workdir / "dry-run-check", snapshot=snapshot,
                               copy=copy, progress=ctx.progress)
    ok = (plan.expected_seconds is not None and plan.bytes == done.bytes and plan.files == done.files
          and done.verified)
    return {"ok": ok, "from": copy, "snapshot": snapshot[:8], "studies": len(studies), "files": plan.files,
            "bytes": plan.bytes, "expected_seconds": plan.as_dict()["expected_seconds"], "basis": plan.basis,
            "measured_seconds": round(done.seconds, 3), "measured_bytes": done.bytes}
