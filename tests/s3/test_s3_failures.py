"""Bad endpoints, buckets and credentials: one clear line, a non-zero exit, nothing uploaded."""

from __future__ import annotations

import subprocess
import sys

import boto3
import pytest

from backupctl.cli import run
from backupctl.config import load_config
from backupctl.s3.server import free_port
from tests.s3.conftest import unique_bucket


def _plain_client(engine):
    access, secret = [line.split(" = ")[1] for line in engine.credentials.read_text().splitlines()[1:3]]
    return boto3.client("s3", endpoint_url=engine.endpoint, aws_access_key_id=access,
                        aws_secret_access_key=secret, region_name="us-east-1")


def _objects(client, bucket: str) -> list[str]:
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


def _one_line_error(result) -> str:
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1, result.err
    assert "Traceback" not in result.err
    return lines[0]


def test_bucket_without_object_lock_is_refused(engine, make_config, cli):
    bucket = unique_bucket()
    client = _plain_client(engine)
    client.create_bucket(Bucket=bucket)
    config = make_config(engine, bucket)
    result = cli(config, "replicate", "--target", "vault")
    assert result.code != 0
    assert "has no Object Lock" in _one_line_error(result)
    init = cli(config, "target", "init", "vault")
    assert init.code == 2 and "has no Object Lock" in _one_line_error(init)
    assert _objects(client, bucket) == []


def test_bucket_with_suspended_versioning_is_refused(moto_engine, make_config, cli):
    # moto only: RGW refuses to suspend versioning on an Object Lock bucket (which is what we want)
    engine = moto_engine
    bucket = unique_bucket()
    client = _plain_client(engine)
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    config = make_config(engine, bucket)
    result = cli(config, "replicate", "--target", "vault")
    assert result.code != 0
    assert "versioning Suspended, not Enabled" in _one_line_error(result)
    assert _objects(client, bucket) == []


def test_unreachable_endpoint(moto_engine, make_config, cli):
    config = make_config(moto_engine, endpoint=f"http://127.0.0.1:{free_port()}", max_attempts=1)
    result = cli(config, "target", "init", "vault")
    assert result.code == 1
    assert "is unreachable" in _one_line_error(result)


@pytest.mark.rgw
def test_wrong_credential(rgw_engine, make_config, cli, tmp_path):
    # RGW only: moto's server accepts any key (it does not authenticate unless IAM is set up)
    bad = tmp_path / "bad-credentials"
    bad.write_text("[default]\naws_access_key_id = NOTAKEY\naws_secret_access_key = wrongwrongwrong\n")
    bad.chmod(0o600)
    config = make_config(rgw_engine)
    text = config.path.read_text().replace(str(rgw_engine.credentials), str(bad))
    config.path.write_text(text)
    config = load_config(config.path)
    result = cli(config, "target", "init", "vault")
    assert result.code == 2
    line = _one_line_error(result)
    assert "refused" in line and "InvalidAccessKeyId" in line
    assert "wrongwrong" not in result.err + result.out


def test_credentials_file_readable_by_others_is_refused(moto_engine, make_config, cli, tmp_path):
    loose = tmp_path / "loose-credentials"
    loose.write_text(moto_engine.credentials.read_text())
    loose.chmod(0o644)
    config = make_config(moto_engine)
    config.path.write_text(config.path.read_text().replace(str(moto_engine.credentials), str(loose)))
    result = cli(load_config(config.path), "target", "init", "vault")
    assert result.code == 2
    assert "readable by group or others" in _one_line_error(result)


def test_missing_environment_credentials(moto_engine, make_config, cli, monkeypatch):
    monkeypatch.delenv("BACKUPCTL_TEST_NO_SUCH_KEY", raising=False)
    config = make_config(moto_engine)
    text = config.path.read_text().split("[targets.vault.credentials]")[0]
    text += '[targets.vault.credentials]\nsource = "env"\naccess_key_env = "BACKUPCTL_TEST_NO_SUCH_KEY"\n'
    config.path.write_text(text)
    result = cli(load_config(config.path), "target", "init", "vault")
    assert result.code == 2
    assert "BACKUPCTL_TEST_NO_SUCH_KEY is not set" in _one_line_error(result)


@pytest.mark.parametrize("setting, message", [
    ('bucket = "Not_A_Bucket"', "bucket"),
    ('endpoint = "ftp://example.org"', "endpoint"),
    ('lock_mode = "LEGAL"', "lock_mode"),
    ('retention_dayz = 3', "retention_dayz: is not a known setting"),
])
def test_config_errors_are_one_line(moto_engine, make_config, cli, setting, message):
    config = make_config(moto_engine)
    key = setting.split(" = ")[0]
    lines = [line for line in config.path.read_text().splitlines() if not line.startswith(f"{key} =")]
    at = lines.index("[targets.vault]") + 1
    lines.insert(at, setting)
    config.path.write_text("\n".join(lines) + "\n")
    code = run(["--config", str(config.path), "target", "init", "vault"])
    assert code == 2
    with pytest.raises(Exception) as info:
        load_config(config.path)
    assert message in str(info.value)



def test_debug_log_never_shows_the_access_key(moto_engine, make_config):
    # botocore's debug log prints request headers (Credential=<access key id>/...): --debug must not
    config = make_config(moto_engine)
    proc = subprocess.run([sys.executable, "-m", "backupctl", "--config", str(config.path), "--debug",
                           "target", "init", "vault"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "testing-writer" not in proc.stderr + proc.stdout   # without the guard it shows 6 times
    assert "testing-secret" not in proc.stderr + proc.stdout
