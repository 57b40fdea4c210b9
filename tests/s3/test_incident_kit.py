"""The recovery kit: export, import on an empty folder, then rebuild the catalog and restore from the S3 copy
alone (the old installation's staging, catalog and secrets are gone)."""

from __future__ import annotations

import filecmp
import json
import shutil
from pathlib import Path

from backupctl.actions.backup import run_backup
from backupctl.config import load_config
from backupctl.dicom.synth import ArchiveSpec
from backupctl.s3.bucket import init_bucket
from backupctl.s3.client import connect
from tests.helpers import CONFIG_TEXT, assert_one_line_error, cli, make_installation
from tests.s3.conftest import s3_target_toml, unique_bucket

SPEC = ArchiveSpec(patients=2, studies_per_patient=1, series_per_study=1, instances_per_series=3, rows=32,
                   columns=32, seed=5)
PASSPHRASE = "correct horse battery staple"


def _passphrase_file(where: Path, text: str = PASSPHRASE) -> Path:
    path = where / "kit-passphrase"
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def test_kit_export_import_then_restore_from_s3_alone(moto_engine, tmp_path: Path) -> None:
    old = tmp_path / "old"
    config = make_installation(old, SPEC, config_text=CONFIG_TEXT + s3_target_toml(moto_engine, unique_bucket()))
    (old / "jobs" / "pacs.toml").write_text(f'name = "pacs"\nsources = ["{old / "archive"}"]\ntargets = ["vault"]\n')
    config = load_config(config.path)
    init_bucket(connect("vault", config.target("vault"), config.resolve))
    outcome = run_backup(config, "pacs")
    assert outcome.replicated_ok
    kit = tmp_path / "kit.txt"
    secret_file = _passphrase_file(tmp_path)
    done = json.loads(cli(config, "keys", "export-kit", "-o", str(kit), "--passphrase-file", str(secret_file),
                          "--json", check=True).stdout)
    assert done["targets"] == ["offline", "vault"] and done["jobs"] == ["pacs"]
    text = kit.read_text()
    assert kit.stat().st_mode & 0o077 == 0
    password = (old / "secrets" / "restic-password").read_text().strip()
    assert password not in text and "testing-secret" not in text and "BEGIN BACKUPCTL RECOVERY KIT" in text
    # a wrong passphrase: one line, exit 2, nothing written
    new = tmp_path / "new"
    wrong = cli(None, "keys", "import-kit", str(kit), "--to", str(new),
                env={"BACKUPCTL_KIT_PASSPHRASE": "not the passphrase at all"})
    assert_one_line_error(wrong, 2, "wrong passphrase")
    assert not new.exists()
    # a passphrase file readable by others is refused
    secret_file.chmod(0o644)
    assert_one_line_error(cli(None, "keys", "import-kit", str(kit), "--to", str(new), "--passphrase-file",
                              str(secret_file)), 2, "readable by group or others")
    # the old installation is gone: only the kit and the bucket remain
    shutil.copytree(old / "archive", tmp_path / "original-archive")
    shutil.rmtree(old)
    imported = json.loads(cli(None, "keys", "import-kit", str(kit), "--to", str(new), "--json",
                              env={"BACKUPCTL_KIT_PASSPHRASE": PASSPHRASE}, check=True).stdout)
    assert "backupctl catalog rebuild --from vault" in imported["next_steps"]
    assert (new / "secrets" / "restic-password").read_text().strip() == password
    assert (new / "secrets" / "restic-password").stat().st_mode & 0o777 == 0o600
    assert (new / "jobs" / "pacs.toml").is_file() and (new / "backupctl.toml.original").is_file()
    conf = new / "backupctl.toml"
    assert cli(conf, "config", "check").returncode == 0
    cli(conf, "catalog", "rebuild", "--from", "vault", check=True)
    snaps = json.loads(cli(conf, "snapshots", "--json", check=True).stdout)
    assert [s["id"] for s in snaps] == [outcome.snapshot_id]
    # no staging on the new machine: the last clean snapshot is verified from the S3 copy
    found = json.loads(cli(conf, "incident", "last-clean", "--job", "pacs", "--json", check=True).stdout)
    assert found["snapshot"] == outcome.snapshot_id and found["verified_by"]["copy"] == "vault"
    assert found["copies"] == ["vault:" + config.target("vault").bucket]
    out = tmp_path / "restored"
    cli(conf, "restore", outcome.snapshot_id, "--from", "vault", "--to", str(out), check=True)
    restored = out / str(old / "archive").lstrip("/")
    cmp = filecmp.dircmp(tmp_path / "original-archive", restored)
    assert not cmp.diff_files and not cmp.left_only and not cmp.right_only
    for a in (tmp_path / "original-archive").rglob("*.dcm"):
        assert a.read_bytes() == (restored / a.relative_to(tmp_path / "original-archive")).read_bytes()
    # importing again over a folder in use is refused
    assert_one_line_error(cli(None, "keys", "import-kit", str(kit), "--to", str(new),
                              env={"BACKUPCTL_KIT_PASSPHRASE": PASSPHRASE}), 2, "not empty")


def test_damaged_kit_is_one_line(tmp_path: Path, installation) -> None:
    kit = tmp_path / "kit.txt"
    env = {"BACKUPCTL_KIT_PASSPHRASE": PASSPHRASE}
    cli(installation, "keys", "export-kit", "-o", str(kit), env=env, check=True)
    lines = kit.read_text().splitlines()
    body = next(i for i, line in enumerate(lines) if line and ": " not in line and not line.startswith(("#", "-")))
    lines[body] = ("A" if lines[body][0] != "A" else "B") + lines[body][1:]
    kit.write_text("\n".join(lines) + "\n")
    assert_one_line_error(cli(None, "keys", "import-kit", str(kit), "--to", str(tmp_path / "n"), env=env), 2,
                          "damaged")
    assert_one_line_error(cli(installation, "keys", "export-kit", "-o", str(tmp_path / "k2"),
                              env={"BACKUPCTL_KIT_PASSPHRASE": "short"}), 2, "shorter than")
