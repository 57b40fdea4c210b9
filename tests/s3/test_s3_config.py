"""S3 target settings and credentials: examples stay valid, keys come from env/profile/0600 file only."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from backupctl.config import S3Credentials, S3TargetConfig, Settings
from backupctl.errors import SecretError
from backupctl.s3.client import make_session

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_minio_rgw_example_is_a_valid_config():
    data = tomllib.loads((EXAMPLES / "s3-minio-rgw.toml").read_text())
    settings = Settings.model_validate(data)
    assert {t.type for t in settings.targets.values()} == {"s3"}
    assert settings.targets["worm"].expire_credentials is not None


def test_defaults_and_normalisation():
    cfg = S3TargetConfig(type="s3", bucket="pacs-worm", prefix="/site-a/", endpoint="http://127.0.0.1:9000/")
    assert cfg.prefix == "site-a/" and cfg.endpoint == "http://127.0.0.1:9000"
    assert cfg.lock_mode == "COMPLIANCE" and cfg.verify_tls
    assert cfg.slack_days == 7 and S3TargetConfig(type="s3", bucket="abc", retention_days=8).slack_days == 2
    with pytest.raises(ValueError, match="without user or password"):
        S3TargetConfig(type="s3", bucket="abc", endpoint="https://key:secret@s3.example.org")


def test_credentials_from_environment(monkeypatch):
    monkeypatch.setenv("PACS_S3_KEY", "AKIDEXAMPLE")
    monkeypatch.setenv("PACS_S3_SECRET", "very-secret")
    session = make_session(S3Credentials(access_key_env="PACS_S3_KEY", secret_key_env="PACS_S3_SECRET"),
                           lambda p: p)
    assert session.get_credentials().access_key == "AKIDEXAMPLE"


def test_credentials_from_profile(monkeypatch, tmp_path):
    shared = tmp_path / "credentials"
    shared.write_text("[backup]\naws_access_key_id = AKIDPROFILE\naws_secret_access_key = s\n")
    shared.chmod(0o600)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(shared))
    session = make_session(S3Credentials(source="profile", profile="backup"), lambda p: p)
    assert session.get_credentials().access_key == "AKIDPROFILE"
    with pytest.raises(SecretError, match="not found"):
        make_session(S3Credentials(source="profile", profile="nobody"), lambda p: p)


def test_credentials_file_section_and_mode(tmp_path):
    f = tmp_path / "keys"
    f.write_text("[writer]\naws_access_key_id = AKIDFILE\naws_secret_access_key = s\n")
    f.chmod(0o600)
    creds = S3Credentials(source="file", file=f, profile="writer")
    assert make_session(creds, lambda p: p).get_credentials().access_key == "AKIDFILE"
    with pytest.raises(SecretError, match=r"no \[default\] section"):
        make_session(S3Credentials(source="file", file=f), lambda p: p)
    f.chmod(0o640)
    with pytest.raises(SecretError, match="readable by group or others"):
        make_session(creds, lambda p: p)
