"""An attacker with the writer key overwrites a pack, deletes a snapshot object, plants a rogue snapshot, adds
an expiring lifecycle rule and a policy hiding versions, and (where the server allows it) suspends versioning:
`s3 audit` still runs and names every change; `s3 recover --as-of` still rebuilds a repository that passes
`restic check --read-data`."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import botocore.exceptions as bex

from backupctl.actions.replicate import replicate_to
from backupctl.catalog import open_catalog
from backupctl.progress import NullProgress
from backupctl.s3.bucket import init_bucket
from backupctl.targets import make_target
from tests.s3.test_s3_attack import overwrite_and_delete


def test_audit_and_recovery_survive_the_attackers_bucket_changes(engine, make_config, staging, cli, tmp_path):
    config = make_config(engine)
    with open_catalog(config.catalog_path) as catalog:
        target = make_target(config, "vault", catalog)
        init_bucket(target.bucket)
        assert replicate_to(config, catalog, "vault", NullProgress()).ok
    first = cli(config, "s3", "audit", "vault", "--json")
    assert first.code == 0, first.err    # and the bucket's settings are remembered
    as_of = datetime.now(UTC)
    files, pack, snap = overwrite_and_delete(target, staging.repository, as_of)
    client, name = target.bucket.client, target.cfg.bucket
    rogue = b'{"time":"2026-01-01T00:00:00Z","tree":"00","paths":["/"],"hostname":"evil"}'
    rogue_key = "snapshots/" + hashlib.sha256(rogue).hexdigest()
    client.put_object(Bucket=name, Key=rogue_key, Body=rogue)
    client.put_bucket_lifecycle_configuration(Bucket=name, LifecycleConfiguration={"Rules": [
        {"ID": "cleanup", "Status": "Enabled", "Filter": {"Prefix": ""},
         "NoncurrentVersionExpiration": {"NoncurrentDays": 1}, "Expiration": {"Days": 1}}]})
    suspended = True
    try:
        client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Suspended"})
    except bex.ClientError:
        suspended = False        # RGW refuses to suspend versioning on an Object Lock bucket
    assert suspended or engine.name == "rgw"

    audit = cli(config, "s3", "audit", "vault", "--json")
    assert audit.code == 1, audit.err     # findings, not a refusal (exit 2)
    assert audit.out, audit.err
    found = {(f["kind"], f["key"]) for f in json.loads(audit.out)["findings"]}
    assert ("unexpected", pack.rel) in found
    assert ("unexpected", snap.rel) in found
    assert ("unexpected", rogue_key) in found
    assert ("bucket", "lifecycle cleanup") in found
    assert ("bucket", "lifecycle rules") in found          # changed since the first audit
    if suspended:
        assert ("bucket", "versioning") in found

    recovered = cli(config, "s3", "recover", "vault", "--to", str(tmp_path / "rec"), "--as-of", as_of.isoformat(),
                    "--json")
    assert recovered.code == 0, recovered.err
    data = json.loads(recovered.out)
    assert data["check"] == "restic check --read-data passed" and data["files"] == len(files)
    assert not (tmp_path / "rec" / rogue_key).exists()
