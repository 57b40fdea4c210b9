"""Restore drills against real restic copies: what they restore, what they catch, what they leave behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from backupctl.actions.drill import run_drill
from backupctl.catalog import drills as drill_rows
from backupctl.catalog import open_catalog
from backupctl.catalog import runs as run_rows
from backupctl.repository import staging_restic
from backupctl.verify.snapshot_manifest import read_snapshot_manifest, trusted_key
from tests.drill_support import Site, archive_files, build_site, corrupt_blob_of
from tests.helpers import assert_one_line_error, cli, wait_for

pytestmark = pytest.mark.slow


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_drill_of_known_snapshot_restores_exactly_the_manifest_files(site: Site) -> None:
    snap = site.backup.snapshot_id
    config = site.define("whole-disk", f'job = "pacs"\ncopy_from = "offline"\nsnapshot = "{snap}"\n'
                                       'scope = "all"\nrto_minutes = 30\n')
    stale = site.scratch_root / f"drill-77-{_dead_pid()}-leftover"
    (stale / "restore").mkdir(parents=True)
    restic = staging_restic(config)
    manifest = read_snapshot_manifest(restic, restic.snapshot(snap), trusted_key(config)).manifest
    listed = {e.path for e in manifest.entries if e.sha256 is not None}
    assert listed == archive_files(site.archive)

    result = run_drill(config, "whole-disk", seed=5)

    assert result.passed, result.first_failures()
    assert result.snapshot_id == snap and result.copy == "offline"
    assert result.files == len(listed) == result.archive_files
    assert result.problems == []                       # nothing missing, altered, or restored beyond the manifest
    assert {c.name: c.status for c in result.checks}["hash"] == "pass"
    assert result.check("dicom").checked == len(listed)
    assert result.rto_basis == "measured" and result.rto_met is True
    assert result.first_study_uid in manifest.studies()
    assert 0 < result.first_study_seconds <= result.recovery_seconds
    assert result.scratch_removed and not Path(result.scratch).exists()
    assert not stale.exists()                          # left by a killed drill: removed by the next one
    with open_catalog(config.catalog_path) as catalog:
        stored = drill_rows.get_drill(catalog, result.run_id)
        run = run_rows.get_run(catalog, result.run_id)
    assert run["kind"] == "drill" and run["status"] == "success"
    phases = {p["name"]: p for p in stored["phases"]}
    assert phases["fetch"]["status"] == "skipped"      # an offline disk is read in place
    for name in ("select", "restore", "verify", "cleanup"):
        assert phases[name]["status"] == "ok" and phases[name]["seconds"] > 0, name
    # one pass per file (hash, then parse of the same bytes), partly while restic restores: no phase per check
    assert "hash" not in phases and "dicom" not in phases
    assert phases["verify"]["files"] <= len(listed) and result.bytes == result.archive_bytes
    assert stored["passed"] is True and stored["rto_met"] is True and stored["scratch_removed"] is True


def test_sampled_drill_picks_studies_by_seed_and_records_which(site: Site) -> None:
    config = site.define("sample", 'job = "pacs"\nscope = "sample:2"\nrto_minutes = 30\n')
    first = run_drill(config, "sample", seed=1)
    second = run_drill(config, "sample", seed=2)
    assert first.passed and second.passed
    picked = [{s.study_uid for s in r.studies} for r in (first, second)]
    assert all(len(p) == 2 for p in picked)
    assert picked[0] != picked[1]
    with open_catalog(config.catalog_path) as catalog:
        recorded = [{s["study_uid"] for s in drill_rows.get_drill(catalog, r.run_id)["studies"]}
                    for r in (first, second)]
        seeds = [drill_rows.get_drill(catalog, r.run_id)["seed"] for r in (first, second)]
    assert recorded == picked and seeds == [1, 2]
    assert first.files == 6 and first.archive_files == 18
    assert first.rto_basis == "estimate"
    assert first.estimated_full_seconds > first.phases[1].seconds   # the whole archive takes longer than select


def test_impossible_rto_is_reported_missed_and_exits_non_zero(site: Site) -> None:
    config = site.define("tight", 'job = "pacs"\nscope = "sample:1"\nrto_minutes = 0.001\n')
    result = cli(config, "drill", "run", "tight", "--json")
    assert_one_line_error(result, 1, "drill tight", "rto")
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["rto_met"] is False
    assert all(c["status"] == "pass" for c in data["checks"] if c["name"] != "rto")
    with open_catalog(config.catalog_path) as catalog:
        stored = drill_rows.get_drill(catalog, data["run_id"])
    assert stored["status"] == "failed" and stored["rto_met"] is False
    assert "rto" in stored["error"]


def test_drill_against_corrupted_copy_fails_names_the_file_and_cleans_up(tmp_path: Path) -> None:
    damaged = build_site(tmp_path)
    victim = sorted(damaged.archive.rglob("*.dcm"))[4]
    corrupt_blob_of(damaged.config, damaged.medium_repository, victim)
    config = damaged.define("from-disk", 'job = "pacs"\ncopy_from = "offline"\nscope = "all"\nrto_minutes = 30\n')

    result = cli(config, "drill", "run", "from-disk")

    assert_one_line_error(result, 1, "drill from-disk", str(victim))
    assert not any(damaged.scratch_root.iterdir())
    with open_catalog(config.catalog_path) as catalog:
        drill = drill_rows.list_drills(catalog, name="from-disk")[0]
        drill = drill_rows.get_drill(catalog, drill["id"])
    assert drill["passed"] is False and drill["scratch_removed"] is True
    named = {(p["check"], p["kind"]) for p in drill["problems"] if p["path"] == str(victim)}
    assert ("restore", "restore-error") in named and ("hash", "missing") in named
    others = {p["path"] for p in drill["problems"]} - {str(victim)}
    assert not others                                   # the other 17 files restored and verified
    assert {c["name"]: c["status"] for c in drill["checks"]}["dicom"] == "pass"
    # the staging repository is intact: the same drill from staging passes
    staging = damaged.define("from-staging", 'job = "pacs"\nscope = "all"\nrto_minutes = 30\n')
    assert run_drill(staging, "from-staging").passed


def _has_child(pid: int, name: str) -> bool:
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)
            comm = fields[0].split("(", 1)[1]
            ppid = int(fields[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue   # the process ended while we looked
        if ppid == pid and comm == name:
            return True
    return False


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_drill_removes_its_scratch_and_says_so(site: Site, sig: signal.Signals) -> None:
    config = site.define("long", 'job = "pacs"\nscope = "all"\nrto_minutes = 30\n')
    argv = [sys.executable, "-m", "backupctl", "--config", str(config.path), "drill", "run", "long"]
    # SIGINT at its default disposition, as in a terminal: a suite started as a shell's background job
    # inherits SIGINT ignored, and Python (rightly) keeps ignoring it, so `kill -INT` would do nothing
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
    try:
        wait_for(lambda: any(p.name.startswith("drill-") and f"-{proc.pid}-" in p.name
                             for p in site.scratch_root.iterdir()) if site.scratch_root.is_dir() else False,
                 what="the drill's scratch folder")
        # the signal must land while the drill works: once its restic runs, the restore and the checks
        # after it are still ahead (restic's key derivation alone takes longer than the signal's delivery)
        wait_for(lambda: _has_child(proc.pid, "restic") or proc.poll() is not None, what="the drill's restic")
        assert proc.poll() is None, "the drill ended before restic ran"
        os.kill(proc.pid, sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    assert not [p for p in site.scratch_root.iterdir() if f"-{proc.pid}-" in p.name]
    with open_catalog(config.catalog_path) as catalog:
        drill = drill_rows.list_drills(catalog, name="long")[0]
    assert drill["status"] == "interrupted" and drill["scratch_removed"] is True


def test_drill_list_and_show(site: Site) -> None:
    config = site.define("listed", 'job = "pacs"\nscope = "sample:1"\nrto_minutes = 30\n')
    done = run_drill(config, "listed", seed=3)
    listing = json.loads(cli(config, "drill", "list", "--json", "--name", "listed", check=True).stdout)
    assert [d["id"] for d in listing] == [done.run_id]
    shown = cli(config, "drill", "show", str(done.run_id), check=True).stdout
    assert f"drill #{done.run_id} listed" in shown and done.studies[0].study_uid in shown
    defined = json.loads(cli(config, "drill", "list", "--defined", "--json", check=True).stdout)
    assert any(d["name"] == "listed" and d["last"].startswith(f"#{done.run_id}") for d in defined)
    assert_one_line_error(cli(config, "drill", "show", "99999"), 2, "no drill #99999")


@pytest.mark.parametrize("scope", ["sample:1", "all"])
def test_manifest_signed_by_another_key_fails_the_drill_and_no_file_is_checked(site: Site, scope: str) -> None:
    from backupctl.signing import generate_key, public_key_path

    config = site.define("trust", f'job = "pacs"\nscope = "{scope}"\nrto_minutes = 30\n')
    pub = public_key_path(config.signing_key)
    genuine = pub.read_bytes()
    other = generate_key(site.root / f"impostor-{scope.replace(':', '-')}.key")
    try:
        pub.write_bytes(public_key_path(other.path).read_bytes())
        result = run_drill(config, "trust", seed=1)
    finally:
        pub.write_bytes(genuine)
    assert not result.passed
    assert result.check("manifest").status == "fail" and "another key" in result.check("manifest").detail
    assert result.check("restore") is None and result.check("hash") is None and result.rto_met is None
    phases = {p.name: p for p in result.phases}
    if scope == "all":   # the whole snapshot's restore starts while its manifest is read, and is stopped
        assert phases["restore"].status == "failed" and "another key" in phases["restore"].detail
    else:                # the studies to restore come from the manifest: nothing is restored
        assert phases["restore"].status == "not-run"
    assert phases["verify"].status == "not-run"
    assert result.scratch_removed


def test_listed_study_missing_from_the_snapshot_fails_the_scope_check(site: Site) -> None:
    config = site.define("listed-missing", 'job = "pacs"\nscope = "studies"\nstudies = ["1.2.3.999"]\n')
    result = cli(config, "drill", "run", "listed-missing")
    assert_one_line_error(result, 1, "scope", "1.2.3.999")


def test_snapshots_the_catalog_does_not_know_are_listed_by_restic(tmp_path: Path) -> None:
    from backupctl.restic import job_tag

    other = build_site(tmp_path)
    config = other.define("newest", 'job = "pacs"\nscope = "all"\nrto_minutes = 30\n')
    first = run_drill(config, "newest", seed=1)
    assert first.passed and first.snapshot_id == other.backup.snapshot_id
    # the catalog knows every snapshot in the copy: its snapshots folder and the catalog are the listing
    assert {p.name: p for p in first.phases}["select"].detail == "the copy's snapshots folder, described by the catalog"
    # a snapshot of the job taken with restic itself: the catalog does not know it, and it is the newest
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "note.txt").write_text("taken behind backupctl's back")
    newer = staging_restic(config).backup([stray], tags=[job_tag("pacs")]).snapshot
    assert newer is not None

    result = run_drill(config, "newest", seed=1)

    assert result.snapshot_id == newer.id                # only restic's listing could know it
    assert result.check("snapshot").status == "pass" and newer.short_id in result.check("snapshot").detail
    assert result.check("manifest").status == "fail" and "no manifest" in result.check("manifest").detail
    assert not result.passed and result.scratch_removed
