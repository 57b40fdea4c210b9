"""Benchmark: replication throughput to the embedded S3 against a plain 4-thread boto3 upload loop.

Both sides upload the same staging repository files with the same headers (lock mode, retain-until,
Content-MD5, SHA-256 checksum), each into a fresh bucket on the same embedded server in the same run.
backupctl additionally checks each file against its name, reads each lock back and records each object in
the catalog; the target is >= 0.9x the plain loop's throughput. Then an incremental run with nothing new
must list the bucket once and upload nothing (requests are counted with botocore's event hooks).

    python -m benchmarks.s3_replication [--mib 160] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from backupctl.actions.backup import run_backup
from backupctl.actions.init import initialize
from backupctl.catalog import open_catalog
from backupctl.config import load_config
from backupctl.dicom.synth import ArchiveSpec, write_archive
from backupctl.progress import NullProgress
from backupctl.repofiles import list_repository
from backupctl.s3.bucket import init_bucket
from backupctl.s3.server import EmbeddedS3
from backupctl.targets import make_target
from benchmarks.plain_s3_upload import plain_client, plain_upload

MIB = 1024 * 1024
# moto spills every object above 5 MiB to a temporary file on this machine's disk; their writeback then stalls
# the fsyncs of backupctl's catalog (ext4 journal commits), a load a remote S3 never puts on the backup host.
# Kept in memory, the server costs CPU only, as the comparison intends (the plain loop fsyncs nothing).
MOTO_IN_MEMORY = {"MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": str(1 << 30)}


def build_staging(root: Path, endpoint: str, mib: int) -> Path:
    """An installation whose staging repository holds about `mib` MiB (half DICOM, half random bytes)."""
    archive = root / "archive"
    per_image = 512 * 512 * 2
    instances = max(1, (mib // 2) * MIB // per_image // 8)
    write_archive(archive, ArchiveSpec(patients=2, studies_per_patient=2, series_per_study=2,
                                       instances_per_series=instances, rows=512, columns=512, seed=11))
    (archive / "random.bin").write_bytes(os.urandom(mib // 2 * MIB))
    creds = root / "s3-credentials"
    creds.write_text("[default]\naws_access_key_id = bench\naws_secret_access_key = bench\n")
    creds.chmod(0o600)
    targets = "".join(
        f'\n[targets.{name}]\ntype = "s3"\nendpoint = "{endpoint}"\nbucket = "bench-{name}"\n'
        f'retention_days = 1\nconcurrency = 4\n[targets.{name}.credentials]\nsource = "file"\nfile = "{creds}"\n'
        for name in ("backupctl", "plain"))
    config, _ = initialize(root / "install", '[catalog]\npath = "var/catalog.sqlite"\n[staging]\n'
                           'repository = "var/staging-repo"\npassword_file = "secrets/restic-password"\n' + targets)
    (config.resolve(config.settings.paths.jobs) / "bench.toml").write_text(f'sources = ["{archive}"]\n')
    run_backup(load_config(config.path), "bench", replicate=False)
    return config.path


def count_requests(client: Any) -> Counter:
    counts: Counter = Counter()
    client.meta.events.register("before-send.s3.*",
                                lambda request, **kw: counts.update([kw["event_name"].rsplit(".", 1)[-1]]))
    return counts


def run(mib: int = 160, rounds: int = 3) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp, EmbeddedS3(env=MOTO_IN_MEMORY) as server:
        config = load_config(build_staging(Path(tmp), server.endpoint, mib))
        staging = config.staging_repository
        files = list_repository(staging)
        total = sum(f.size for f in files)
        results: dict[str, list[float]] = {"backupctl": [], "plain": []}
        # the bar gets a client of its own with boto3's defaults, not backupctl's
        plain_boto3 = plain_client(server.endpoint, aws_access_key_id="bench", aws_secret_access_key="bench")
        with open_catalog(config.catalog_path) as catalog:
            for r in range(rounds):
                plain = make_target(config, "plain", catalog)
                ours = make_target(config, "backupctl", catalog)
                for t in (plain, ours):
                    t.cfg = t.cfg.model_copy(update={"bucket": f"{t.cfg.bucket}-{r}"})
                    t._bucket = None
                    init_bucket(t.bucket)
                # alternate who goes first, so neither always meets a warmer server
                order = ("plain", "backupctl") if r % 2 == 0 else ("backupctl", "plain")
                for who in order:
                    if who == "plain":
                        started = time.monotonic()
                        plain_upload(plain_boto3, plain.cfg.bucket, staging, [f.rel for f in files])
                        results["plain"].append(time.monotonic() - started)
                    else:
                        started = time.monotonic()
                        report = ours.sync(staging, files, NullProgress())
                        results["backupctl"].append(time.monotonic() - started)
                        assert report.uploaded == len(files)
            counts = count_requests(ours.bucket.client)
            again = ours.sync(staging, files, NullProgress())
    best = {k: min(v) for k, v in results.items()}
    return {
        "files": len(files), "bytes": total,
        "backupctl_mib_s": round(total / MIB / best["backupctl"], 1),
        "plain_boto3_4_threads_mib_s": round(total / MIB / best["plain"], 1),
        "ratio": round(best["plain"] / best["backupctl"], 3),
        "target_ratio": 0.9,
        "incremental": {"uploaded": again.uploaded, "requests": dict(counts),
                        "lists": counts.get("ListObjectVersions", 0), "puts": counts.get("PutObject", 0)},
        "seconds": {k: [round(x, 3) for x in v] for k, v in results.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=160)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = run(args.mib, args.rounds)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['files']} files, {result['bytes'] / MIB:.0f} MiB: backupctl {result['backupctl_mib_s']} "
              f"MiB/s, plain boto3 {result['plain_boto3_4_threads_mib_s']} MiB/s, ratio {result['ratio']} "
              f"(target >= 0.9); incremental: {result['incremental']}")


if __name__ == "__main__":
    main()
