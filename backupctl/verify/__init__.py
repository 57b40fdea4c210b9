"""Integrity verification: signed manifests in every snapshot, and `backupctl verify` at three levels.

* `repo`: `restic check` plus a rotating `--read-data-subset` slice, so every pack is read back at least once
  every N runs (the catalog records which slices and packs were read when);
* `replicas`: every object of every replica target exists and has the SHA-256 its name promises
  (plus lock mode and retain-until on S3);
* `restore`: restore a snapshot (or a sample of studies) and check every file against the signed manifest,
  with a full DICOM parse.

Restore drills build on `verify.restored` (`check_restored_file`, `verify_restored_tree`; each file read
once, hashed, then parsed from the same bytes), `verify.alongside` (checking files while restic still
restores them) and `verify.snapshot_manifest.read_snapshot_manifest`.
"""
