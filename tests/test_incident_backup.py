"""A suspect snapshot end to end: the backup after an attack is kept, tagged `suspect` in the repository and
the catalog, exits 4 with the signals, `status` shows it, retention keeps the clean snapshots before it and
expiry pauses; `incident clear` lifts it."""

from __future__ import annotations

import json
from pathlib import Path

from backupctl.actions.backup import run_backup
from backupctl.catalog import open_catalog
from backupctl.catalog import snapshots as snapshot_rows
from backupctl.config import Config
from backupctl.dicom.synth import ArchiveSpec
from backupctl.incident.state import open_suspects
from backupctl.repository import staging_restic
from tests.helpers import assert_one_line_error, cli, make_installation
from tests.ransom_sim import attack, normal_day

SPEC = ArchiveSpec(patients=4, studies_per_patient=2, series_per_study=1, instances_per_series=4, rows=32,
                   columns=32, seed=21)


def _installation(tmp_path: Path, extra: str = "") -> Config:
    return make_installation(tmp_path, SPEC, job_extra=extra)


def test_attack_backup_is_kept_tagged_and_exits_4(tmp_path: Path) -> None:
    config = _installation(tmp_path)
    clean = run_backup(config, "pacs", replicate=False)
    assert clean.suspect is None or not clean.suspect["suspect"]   # first backup: nothing to compare with
    normal_day(tmp_path / "archive", 1)
    day = run_backup(config, "pacs", replicate=False)
    assert day.suspect is not None and day.suspect["compared"] and not day.suspect["suspect"]
    attack(tmp_path / "archive")
    result = cli(config, "backup", "run", "pacs", "--no-replicate", "--json")
    assert_one_line_error(result, 4, "SUSPECT", "lost the DICM marker", "docs/incident.md")
    data = json.loads(result.stdout)
    assert data["suspect"]["suspect"] is True
    fired = {s["name"] for s in data["suspect"]["signals"] if s["fired"]}
    assert {"lost_dicom", "entropy_jump", "ransom_notes", "encrypted_extensions"} <= fired
    # kept, and tagged in the repository under its new id, which the catalog records
    (tagged,) = staging_restic(config).snapshots(tags=["suspect"])
    assert tagged.id == data["snapshot_id"]
    with open_catalog(config.catalog_path) as catalog:
        (suspect,) = open_suspects(catalog, "pacs")
        assert suspect["id"] == tagged.id
    report = json.loads((config.state_dir / "incident" / f"suspect-{tagged.id}.json").read_text())
    assert report["job"] == "pacs" and report["suspect"]
    assert (config.state_dir / "incident" / f"suspect-{tagged.id}.json").stat().st_mode & 0o077 == 0
    # status shows it, and fails --check
    status = cli(config, "status", "--json")
    problems = json.loads(status.stdout)["problems"]
    assert any("SUSPECT" in p and tagged.short_id in p for p in problems)
    assert cli(config, "status", "--check").returncode == 1
    assert 'backupctl_job_suspect_snapshots{job="pacs"} 1.0' in cli(config, "metrics", check=True).stdout
    listed = json.loads(cli(config, "incident", "list", "--json").stdout)
    assert not listed["ok"] and [x["snapshot"] for x in listed["suspects"]] == [tagged.id]
    assert str(tmp_path) not in json.dumps(listed)    # the summary names signals, never paths
    # a backup of the encrypted state is not a new suspect (nothing changed), but the incident stays open
    again = run_backup(config, "pacs", replicate=False)
    assert again.suspect is not None and not again.suspect["suspect"]
    # cleared by an admin with a reason
    assert cli(config, "incident", "clear", tagged.short_id).returncode == 2
    cli(config, "incident", "clear", tagged.short_id, "--reason", "test: drill", check=True)
    with open_catalog(config.catalog_path) as catalog:
        assert open_suspects(catalog, "pacs") == []
    assert 'backupctl_job_suspect_snapshots{job="pacs"} 0.0' in cli(config, "metrics", check=True).stdout
    assert json.loads(cli(config, "status", "--json").stdout)["suspects"] == []


def test_retention_keeps_clean_snapshots_while_a_suspect_one_is_open(tmp_path: Path) -> None:
    config = _installation(tmp_path, "[retention]\nkeep_last = 1\n")
    (config.base / "backupctl.toml").write_text(
        (config.base / "backupctl.toml").read_text() + "\n[suspect]\nkeep_clean = 2\n")
    archive = tmp_path / "archive"
    ids = [run_backup(config, "pacs", replicate=False).snapshot_id]
    for day in (1, 2):
        normal_day(archive, day)
        ids.append(run_backup(config, "pacs", replicate=False).snapshot_id)
    attack(archive)
    assert cli(config, "backup", "run", "pacs", "--no-replicate").returncode == 4
    normal_day(archive, 3, deleted_studies=0, corrections=0)
    after = run_backup(config, "pacs", replicate=False).snapshot_id
    with open_catalog(config.catalog_path) as catalog:
        (suspect,) = open_suspects(catalog, "pacs")
    done = json.loads(cli(config, "forget", "pacs", "--json", check=True).stdout)
    # keep_last = 1 alone would keep `after` only; the two newest clean ones and the suspect one stay too
    assert {s["id"] for s in done["removed"]} == {ids[0]}
    left = {s.id for s in staging_restic(config).snapshots()}
    assert left == {ids[1], ids[2], suspect["id"], after}
    staging_restic(config).check()
    # once cleared, the policy applies again
    cli(config, "incident", "clear", suspect["id"][:12], "--reason", "restored and re-imported", check=True)
    cli(config, "forget", "pacs", check=True)
    assert {s.id for s in staging_restic(config).snapshots()} == {after}
    with open_catalog(config.catalog_path) as catalog:
        statuses = {s["id"]: s["status"] for s in snapshot_rows.list_snapshots(catalog, include_forgotten=True)}
    assert statuses[ids[1]] == "forgotten" and statuses[after] == "complete"


def test_last_clean_picks_the_snapshot_before_the_attack(tmp_path: Path) -> None:
    config = _installation(tmp_path)
    archive = tmp_path / "archive"
    run_backup(config, "pacs", replicate=False)
    normal_day(archive, 1)
    before = run_backup(config, "pacs", replicate=False)
    study = next(iter(sorted(p.name for p in (archive / "p00001").iterdir())))
    attack(archive, share=0.5)
    assert cli(config, "backup", "run", "pacs", "--no-replicate").returncode == 4
    run_backup(config, "pacs", replicate=False)   # the encrypted state again, not itself suspect
    found = json.loads(cli(config, "incident", "last-clean", "--json", check=True).stdout)
    assert found["snapshot"] == before.snapshot_id
    assert found["verified_by"]["ran_now"] is True and found["verified_by"]["checked_files"] > 0
    assert found["copies"] == ["staging"]
    assert found["first_suspect"] is not None
    again = json.loads(cli(config, "incident", "last-clean", "--job", "pacs", "--json", check=True).stdout)
    assert again["snapshot"] == before.snapshot_id and again["verified_by"]["ran_now"] is False
    by_study = json.loads(cli(config, "incident", "last-clean", "--study", study, "--json", check=True).stdout)
    assert by_study["snapshot"] == before.snapshot_id
    text = cli(config, "incident", "last-clean", check=True).stdout
    assert before.short_id in text and "restore it: backupctl restore" in text
    assert_one_line_error(cli(config, "incident", "last-clean", "--study", "1.2.3.4"), 1, "no snapshot holding study")
