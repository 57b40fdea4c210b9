"""HTTPS with a self-signed certificate as CA bundle; the WORM probe on both engines; the CLI round trip."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from backupctl.s3.server import EmbeddedS3
from tests.s3.conftest import Engine


@pytest.fixture(scope="session")
def https_engine(moto_engine: Engine, tmp_path_factory: pytest.TempPathFactory):
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    server = EmbeddedS3(cert=cert, key=key, log=folder / "moto.log")
    endpoint = server.start()
    try:
        yield Engine("moto-https", endpoint, moto_engine.credentials, ca_bundle=cert)
    finally:
        server.stop()


def test_https_with_ca_bundle(https_engine, make_config, cli, tmp_path):
    assert https_engine.endpoint.startswith("https://")
    config = make_config(https_engine)
    assert cli(config, "target", "init", "vault").code == 0
    replicated = cli(config, "replicate", "--target", "vault", "--json")
    assert replicated.code == 0, replicated.err
    assert json.loads(replicated.out)["targets"][0]["report"]["uploaded"] > 0
    assert cli(config, "s3", "audit", "vault").code == 0


def test_https_without_ca_bundle_is_refused(https_engine, make_config, cli):
    config = make_config(https_engine)
    config.path.write_text("\n".join(line for line in config.path.read_text().splitlines()
                                     if not line.startswith("ca_bundle")) + "\n")
    result = cli(config, "target", "init", "vault")
    assert result.code == 2
    assert "TLS certificate verification failed" in result.err
    assert len([line for line in result.err.splitlines() if line.strip()]) == 1


@pytest.mark.slow
def test_probe_reports_what_each_engine_enforces(engine, make_config, cli):
    config = make_config(engine)
    result = cli(config, "s3", "probe", "vault", "--json", "--canary-seconds", "2")
    probe = json.loads(result.out)
    checks = probe["checks"]
    assert probe["cleaned_up"], probe["leftover"]
    # both engines refuse the basics
    assert checks["delete-locked-version"] == "refused"
    assert checks["delete-governance-without-bypass"] == "refused"
    assert checks["delete-bucket"] == "refused"
    # both drop the lock headers of a multipart upload (backupctl sets the lock afterwards)
    assert checks["multipart-keeps-lock"] == "dropped"
    if engine.enforces_compliance:     # Ceph RGW
        assert checks["shorten-compliance-retention"] == "refused"
        assert checks["compliance-to-governance"] == "refused"
        assert checks["suspend-versioning"] == "refused"
        assert checks["wrong-md5-rejected"] == "rejected"
        assert probe["enforced"] and result.code == 0
    else:                               # moto 5.2.5: known gaps, reported honestly
        assert checks["shorten-compliance-retention"] == "allowed"
        assert checks["suspend-versioning"] == "allowed"
        assert not probe["enforced"] and result.code == 1
        assert "shorten-compliance-retention" in probe["findings"]


@pytest.mark.slow
def test_cli_replicate_audit_recover_restore(engine, make_config, staging, cli, tmp_path):
    config = make_config(engine)
    assert cli(config, "target", "init", "vault").code == 0
    assert cli(config, "target", "init", "vault").code == 0          # idempotent: checks the bucket
    assert cli(config, "replicate", "--target", "vault").code == 0
    status = json.loads(cli(config, "s3", "status", "vault", "--json").out)
    assert status["objects"] > 0 and status["earliest_unlock"] <= status["latest_unlock"]
    audit = cli(config, "s3", "audit", "vault", "--json")
    report = json.loads(audit.out)
    assert audit.code == 0 and report["ok"] and report["objects"] == report["locked"] > 0
    recovered = cli(config, "s3", "recover", "vault", "--to", str(tmp_path / "rebuilt"), "--json")
    data = json.loads(recovered.out)
    assert recovered.code == 0 and data["ok"] and data["check"]
    restored = cli(config, "restore", staging.snapshots[0][:8], "--from", "vault", "--to",
                   str(tmp_path / "files"))
    assert restored.code == 0, restored.err
    assert (tmp_path / "files" / staging.archive.relative_to("/") / "big.bin").stat().st_size > 0
