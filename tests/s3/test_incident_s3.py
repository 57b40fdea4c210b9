"""Containment on the S3 copy: expiry pauses while a suspect snapshot is open; `incident freeze` puts legal
holds on every recorded version and pauses pruning and expiry; `thaw` lifts them."""

from __future__ import annotations

import json
from pathlib import Path

import botocore.exceptions as bex
import pytest

from backupctl.actions.backup import run_backup
from backupctl.catalog import open_catalog
from backupctl.catalog import s3 as s3_rows
from backupctl.config import load_config
from backupctl.dicom.synth import ArchiveSpec
from backupctl.s3.bucket import init_bucket
from backupctl.s3.client import connect
from tests.helpers import CONFIG_TEXT, assert_one_line_error, cli, make_installation
from tests.ransom_sim import attack, normal_day
from tests.s3.conftest import s3_target_toml, unique_bucket

SPEC = ArchiveSpec(patients=3, studies_per_patient=2, series_per_study=1, instances_per_series=3, rows=32,
                   columns=32, seed=9)


def _holds(bucket, objects) -> set[str]:
    found = set()
    for key, obj in objects.items():
        got = bucket.client.get_object_legal_hold(Bucket=bucket.name, Key=bucket.key(key), VersionId=obj.version_id)
        found.add(got["LegalHold"]["Status"])
    return found


@pytest.mark.slow
def test_suspect_pauses_expiry_and_freeze_holds_every_version(engine, tmp_path: Path) -> None:
    root = tmp_path / "site"
    # GOVERNANCE, so a delete that bypasses retention is refused by the legal hold alone
    target = s3_target_toml(engine, unique_bucket(), lock_mode="GOVERNANCE")
    config = make_installation(root, SPEC, config_text=CONFIG_TEXT + target)
    (root / "jobs" / "pacs.toml").write_text(
        f'name = "pacs"\nsources = ["{root / "archive"}"]\ntargets = ["vault"]\n[retention]\nkeep_last = 1\n')
    config = load_config(config.path)
    bucket = connect("vault", config.target("vault"), config.resolve)
    init_bucket(bucket)
    assert run_backup(config, "pacs").replicated_ok
    normal_day(root / "archive", 1)
    assert run_backup(config, "pacs").replicated_ok
    attack(root / "archive")
    result = cli(config, "backup", "run", "pacs", "--json")
    assert result.returncode == 4, result.stderr
    assert json.loads(result.stdout)["replicas"][0]["ok"] is True   # the suspect snapshot is replicated too
    assert_one_line_error(cli(config, "s3", "expire", "vault", "--dry-run"), 1, "expiry is paused", "suspect")

    assert_one_line_error(cli(config, "incident", "freeze"), 2, "--reason")
    done = json.loads(cli(config, "incident", "freeze", "--reason", "ransomware on the PACS", "--json",
                          check=True).stdout)
    with open_catalog(config.catalog_path) as catalog:
        live = s3_rows.live_objects(catalog, "vault", bucket.location)
    assert done["held"] == len(live) > 0 and done["failures"] == [] and done["targets"] == ["vault"]
    assert _holds(bucket, live) == {"ON"}
    from backupctl.audit.log import log_path

    records = [json.loads(line) for line in log_path(config.state_dir).read_text().splitlines() if line.strip()]
    (frozen_record,) = [r for r in records if r["action"] == "incident freeze" and r["outcome"] == "ok"]
    assert frozen_record["ids"]["reason"] == "ransomware on the PACS" and frozen_record["ids"]["held"] == len(live)
    assert_one_line_error(cli(config, "incident", "freeze", "--reason", "again"), 2, "already frozen")
    assert_one_line_error(cli(config, "forget", "pacs"), 1, "pruning is paused", "frozen")
    assert any("incident frozen" in p for p in json.loads(cli(config, "status", "--json").stdout)["problems"])
    # the legal hold keeps a version whatever its retention says: a delete bypassing retention is refused
    key, obj = next((k, o) for k, o in live.items() if k.startswith("snapshots/"))
    with pytest.raises(bex.ClientError):
        bucket.client.delete_object(Bucket=bucket.name, Key=bucket.key(key), VersionId=obj.version_id,
                                    BypassGovernanceRetention=True)

    thawed = json.loads(cli(config, "incident", "thaw", "--reason", "restored; forensics done", "--json",
                            check=True).stdout)
    assert thawed["lifted"] == len(live)
    assert _holds(bucket, live) == {"OFF"}
    # without the hold, the same delete goes through: the hold, not the retention, refused it above
    bucket.client.delete_object(Bucket=bucket.name, Key=bucket.key(key), VersionId=obj.version_id,
                                BypassGovernanceRetention=True)
    assert_one_line_error(cli(config, "incident", "thaw", "--reason", "x"), 2, "no incident is frozen")
    # pruning is back, still keeping the clean snapshots before the open suspect one
    cli(config, "forget", "pacs", check=True)


def test_incident_recover_from_s3_after_staging_is_gone(moto_engine, tmp_path: Path) -> None:
    import shutil

    from backupctl.repofiles import list_repository
    from tests.s3.test_s3_attack import same_tree

    root = tmp_path / "site"
    config = make_installation(root, SPEC, config_text=CONFIG_TEXT + s3_target_toml(moto_engine, unique_bucket()))
    (root / "jobs" / "pacs.toml").write_text(f'name = "pacs"\nsources = ["{root / "archive"}"]\ntargets = ["vault"]\n')
    config = load_config(config.path)
    bucket = connect("vault", config.target("vault"), config.resolve)
    init_bucket(bucket)
    assert run_backup(config, "pacs").replicated_ok
    normal_day(root / "archive", 1)
    clean = run_backup(config, "pacs")
    assert clean.replicated_ok
    shutil.copytree(root / "archive", tmp_path / "before-attack")
    attack(root / "archive")
    assert cli(config, "backup", "run", "pacs").returncode == 4
    # the attacker overwrites a pack in the bucket with the writer key, and staging is lost
    pack = next(f for f in list_repository(config.staging_repository) if f.kind == "data")
    bucket.client.put_object(Bucket=bucket.name, Key=bucket.key(pack.rel), Body=b"encrypted")
    shutil.rmtree(config.staging_repository)

    out, reports = tmp_path / "recovered", tmp_path / "reports"
    result = cli(config, "incident", "recover", "--job", "pacs", "--to", str(out), "--report-dir", str(reports),
                 "--rto-minutes", "30", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] and data["snapshot"] == clean.snapshot_id and data["skipped"] == []
    assert [p["name"] for p in data["phases"]] == ["select", "fetch", "restore", "verify"]
    assert "recorded at upload" in data["versions"] and data["files"] > 0
    assert same_tree(tmp_path / "before-attack", out / str(root / "archive").lstrip("/"))
    for name in ("recovery-report.md", "recovery-report.json"):
        check = cli(config, "drill", "report", "--verify", str(reports / name))
        assert check.returncode == 0 and "signature OK" in check.stdout, check.stderr
    review = (reports / "post-incident-review.md").read_text()
    assert "## Root cause" in review and clean.snapshot_id in review
    md = reports / "recovery-report.md"
    md.write_text(md.read_text().replace("recovered", "restored", 1))
    assert cli(config, "drill", "report", "--verify", str(md)).returncode != 0
    assert_one_line_error(cli(config, "incident", "recover", "--job", "pacs", "--to", str(out)), 2, "not empty")


@pytest.mark.orthanc
def test_incident_recover_to_pacs_sends_only_verified_files(moto_engine, tmp_path: Path) -> None:
    from backupctl.pacs.orthanc import OrthancProcess

    root = tmp_path / "site"
    config = make_installation(root, SPEC, config_text=CONFIG_TEXT + s3_target_toml(moto_engine, unique_bucket()))
    (root / "jobs" / "pacs.toml").write_text(f'name = "pacs"\nsources = ["{root / "archive"}"]\ntargets = ["vault"]\n')
    config = load_config(config.path)
    init_bucket(connect("vault", config.target("vault"), config.resolve))
    clean = run_backup(config, "pacs")
    attack(root / "archive")
    assert cli(config, "backup", "run", "pacs").returncode == 4
    with OrthancProcess(tmp_path / "orthanc", disposable=True) as orthanc:
        creds = tmp_path / "pacs-creds"
        creds.write_text(f"{orthanc.credentials.username}:{orthanc.credentials.password}\n")
        creds.chmod(0o600)
        leaky = orthanc.url.replace("http://", "http://u:secret@")
        assert_one_line_error(cli(config, "incident", "recover", "--job", "pacs", "--to", str(tmp_path / "x"),
                                  "--to-pacs", leaky), 2, "must not carry credentials")
        result = cli(config, "incident", "recover", "--job", "pacs", "--to", str(tmp_path / "out"), "--to-pacs",
                     orthanc.url, "--pacs-credentials", str(creds), "--json")
        assert result.returncode == 0, result.stderr
        data = json.loads(result.stdout)
        instances = SPEC.patients * SPEC.studies_per_patient * SPEC.series_per_study * SPEC.instances_per_series
        assert data["snapshot"] == clean.snapshot_id
        assert data["pacs"]["stored"] == data["pacs"]["dicom_files"] == instances and data["pacs"]["rejected"] == []
        assert [p["name"] for p in data["phases"]][-1] == "send"
        assert orthanc.api().counts()["instances"] == instances
        assert orthanc.credentials.password not in result.stdout + result.stderr


def test_freeze_uses_the_hold_credential_when_configured(moto_engine, tmp_path: Path) -> None:
    root = tmp_path / "site"
    hold = tmp_path / "hold-credentials"
    target = (s3_target_toml(moto_engine, unique_bucket())
              + f'\n[targets.vault.hold_credentials]\nsource = "file"\nfile = "{hold}"\n')
    config = make_installation(root, SPEC, config_text=CONFIG_TEXT + target)
    (root / "jobs" / "pacs.toml").write_text(f'name = "pacs"\nsources = ["{root / "archive"}"]\ntargets = ["vault"]\n')
    config = load_config(config.path)
    init_bucket(connect("vault", config.target("vault"), config.resolve))
    assert run_backup(config, "pacs").replicated_ok
    # the hold credential's file is missing: refused before anything is held or recorded (no fallback to the
    # writer's key)
    assert_one_line_error(cli(config, "incident", "freeze", "--reason", "test"), 2, str(hold), "does not exist")
    assert not (config.state_dir / "incident" / "frozen.json").exists()
    hold.write_text("[default]\naws_access_key_id = legal-hold\naws_secret_access_key = hold-secret\n")
    hold.chmod(0o600)
    again = json.loads(cli(config, "incident", "freeze", "--reason", "test", "--json", check=True).stdout)
    assert again["held"] > 0 and again["failures"] == []


def _writer_policy(bucket: str, writer_uid: str, hold_uid: str, deny_hold: bool = False) -> str:
    """What replication and the catalog's reads need, granted to the writer user: every object-lock action
    except s3:PutObjectLegalHold (and no bypass of governance retention). The hold user owns the bucket but
    not the writer's objects (RGW keeps per-object owners), so it is granted the legal hold explicitly."""
    actions = ["s3:PutObject", "s3:GetObject", "s3:GetObjectVersion", "s3:DeleteObject", "s3:ListBucket",
               "s3:ListBucketVersions", "s3:ListBucketMultipartUploads", "s3:AbortMultipartUpload",
               "s3:ListMultipartUploadParts", "s3:GetBucketVersioning", "s3:GetBucketObjectLockConfiguration",
               "s3:PutObjectRetention", "s3:GetObjectRetention", "s3:GetObjectLegalHold"]
    return json.dumps({"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": [f"arn:aws:iam:::user/{writer_uid}"]}, "Action": actions,
        "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}, {
        "Effect": "Allow", "Principal": {"AWS": [f"arn:aws:iam:::user/{hold_uid}"]},
        "Action": ["s3:PutObjectLegalHold", "s3:GetObjectLegalHold"], "Resource": [f"arn:aws:s3:::{bucket}/*"]},
        *([{"Effect": "Deny", "Principal": {"AWS": [f"arn:aws:iam:::user/{writer_uid}"]},
            "Action": ["s3:PutObjectLegalHold"], "Resource": [f"arn:aws:s3:::{bucket}/*"]}] if deny_hold else [])]})


@pytest.mark.rgw
@pytest.mark.slow
def test_rgw_writer_cannot_lift_a_hold_the_hold_credential_set(rgw_engine, tmp_path: Path) -> None:
    from backupctl.dev.rgw import USER, RgwCluster

    # the fixture's owner user is the hold credential; a second user, granted the bucket by policy, is the writer
    cluster = RgwCluster(rgw_engine.credentials.parent.parent)
    uid = f"writer-{unique_bucket('u')[2:]}"
    keys = cluster.add_user(uid)
    writer = tmp_path / "writer-credentials"
    writer.write_text(f"[default]\naws_access_key_id = {keys.access_key}\naws_secret_access_key = {keys.secret_key}\n")
    writer.chmod(0o600)
    name = unique_bucket()
    root = tmp_path / "site"
    config = make_installation(root, SPEC, config_text=CONFIG_TEXT + s3_target_toml(rgw_engine, name))
    (root / "jobs" / "pacs.toml").write_text(f'name = "pacs"\nsources = ["{root / "archive"}"]\ntargets = ["vault"]\n')
    owner = connect("vault", load_config(config.path).target("vault"), load_config(config.path).resolve)
    init_bucket(owner)
    owner.client.put_bucket_policy(Bucket=name, Policy=_writer_policy(name, uid, USER))
    # from here on the backup host holds the writer's key only; the owner's is the hold credential
    text = config.path.read_text().replace(f'file = "{rgw_engine.credentials}"', f'file = "{writer}"')
    config.path.write_text(text + f'\n[targets.vault.hold_credentials]\nsource = "file"\n'
                                  f'file = "{rgw_engine.credentials}"\n')
    config = load_config(config.path)
    bucket = connect("vault", config.target("vault"), config.resolve)
    assert run_backup(config, "pacs").replicated_ok

    done = json.loads(cli(config, "incident", "freeze", "--reason", "writer key stolen", "--json",
                          check=True).stdout)
    with open_catalog(config.catalog_path) as catalog:
        live = s3_rows.live_objects(catalog, "vault", bucket.location)
    assert done["held"] == len(live) > 0 and done["failures"] == []
    assert _holds(bucket, live) == {"ON"}   # the writer may read the hold, not lift it
    key, obj = next((k, o) for k, o in live.items() if k.startswith("snapshots/"))
    # RGW gap: the writer uploaded the object, so it owns it, and its object ACL (FULL_CONTROL) lets it lift
    # the hold although the bucket policy never granted s3:PutObjectLegalHold
    bucket.client.put_object_legal_hold(Bucket=name, Key=bucket.key(key), VersionId=obj.version_id,
                                        LegalHold={"Status": "OFF"})
    assert _holds(bucket, {key: obj}) == {"OFF"}
    owner.client.put_object_legal_hold(Bucket=name, Key=bucket.key(key), VersionId=obj.version_id,
                                       LegalHold={"Status": "ON"})
    # what RGW does enforce: an explicit Deny for the writer in the owner's bucket policy
    owner.client.put_bucket_policy(Bucket=name, Policy=_writer_policy(name, uid, USER, deny_hold=True))
    with pytest.raises(bex.ClientError) as refused:
        bucket.client.put_object_legal_hold(Bucket=name, Key=bucket.key(key), VersionId=obj.version_id,
                                            LegalHold={"Status": "OFF"})
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert _holds(bucket, live) == {"ON"}
    with pytest.raises(bex.ClientError):
        bucket.client.delete_object(Bucket=name, Key=bucket.key(key), VersionId=obj.version_id)

    thawed = json.loads(cli(config, "incident", "thaw", "--reason", "keys rotated", "--json", check=True).stdout)
    assert thawed["lifted"] == len(live)
    assert _holds(bucket, live) == {"OFF"}
