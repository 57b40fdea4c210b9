-- Verification (issue 4): manifests and the study index, verification findings, coverage.

-- The signed manifest stored inside each snapshot (one per snapshot).
CREATE TABLE manifests (
    snapshot_id     TEXT PRIMARY KEY REFERENCES snapshots(id),
    sha256          TEXT NOT NULL,                   -- of the manifest file (what the signature covers)
    key_id          TEXT NOT NULL,                   -- signing key (first 16 hex of SHA-256 of the public key)
    path            TEXT NOT NULL,                   -- the manifest folder's path inside the snapshot
    files           INTEGER NOT NULL,
    bytes           INTEGER NOT NULL,
    dicom           INTEGER NOT NULL,
    not_dicom       INTEGER NOT NULL,
    problems        INTEGER NOT NULL,                -- unreadable or unparseable at backup time
    hashed          INTEGER,                         -- read this time (the rest reused from the previous)
    reused          INTEGER,
    seconds         REAL,
    changed_during_backup INTEGER NOT NULL DEFAULT 0, -- files whose size/mtime restic saw differently
    created         TEXT NOT NULL
);

-- Files that changed between the manifest pass and restic's read, per snapshot: not corruption.
CREATE TABLE manifest_changed (
    snapshot_id     TEXT NOT NULL REFERENCES snapshots(id),
    path            TEXT NOT NULL,
    detail          TEXT NOT NULL,
    PRIMARY KEY (snapshot_id, path)
);

-- The study index: which snapshot holds which study (from its manifest).
CREATE TABLE snapshot_studies (
    snapshot_id     TEXT NOT NULL REFERENCES snapshots(id),
    study_uid       TEXT NOT NULL,
    series          INTEGER NOT NULL,
    instances       INTEGER NOT NULL,
    bytes           INTEGER NOT NULL,
    modalities      TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (snapshot_id, study_uid)
);
CREATE INDEX snapshot_studies_study ON snapshot_studies(study_uid);

-- Series and SOP instances are looked up in the manifest itself (one per snapshot), so the catalog stays
-- small; the series index lets `find --series` answer without reading manifests.
CREATE TABLE snapshot_series (
    snapshot_id     TEXT NOT NULL REFERENCES snapshots(id),
    series_uid      TEXT NOT NULL,
    study_uid       TEXT NOT NULL,
    instances       INTEGER NOT NULL,
    PRIMARY KEY (snapshot_id, series_uid)
);
CREATE INDEX snapshot_series_series ON snapshot_series(series_uid);

-- One row per verification run (the run itself is in `runs`, kind 'verify:<level>').
CREATE TABLE verifications (
    run_id          INTEGER PRIMARY KEY REFERENCES runs(id),
    level           TEXT NOT NULL,                   -- repo | replicas | restore
    subject         TEXT NOT NULL,                   -- repository, target names, or snapshot id
    ok              INTEGER NOT NULL,
    checked         INTEGER NOT NULL,                -- packs, objects or files checked
    failures        INTEGER NOT NULL,
    bytes           INTEGER NOT NULL DEFAULT 0,
    seconds         REAL NOT NULL,
    summary         TEXT NOT NULL DEFAULT '{}'       -- JSON: level-specific figures
);

CREATE TABLE verify_findings (
    id              INTEGER PRIMARY KEY,
    run_id          INTEGER NOT NULL REFERENCES runs(id),
    level           TEXT NOT NULL,
    severity        TEXT NOT NULL,                   -- error | warning | note
    kind            TEXT NOT NULL,                   -- hash-mismatch, missing, altered, truncated, ...
    subject         TEXT NOT NULL,                   -- file path, object key or pack id
    detail          TEXT NOT NULL DEFAULT ''
);
CREATE INDEX verify_findings_run ON verify_findings(run_id);

-- Coverage of `restic check --read-data-subset n/N`: when each slice and each pack was last read back.
CREATE TABLE slice_reads (
    repository      TEXT NOT NULL,
    slices          INTEGER NOT NULL,
    slice           INTEGER NOT NULL,                -- 1..slices, as restic numbers them
    last_read       TEXT NOT NULL,
    run_id          INTEGER REFERENCES runs(id),
    ok              INTEGER NOT NULL,
    PRIMARY KEY (repository, slices, slice)
);

CREATE TABLE pack_reads (
    repository      TEXT NOT NULL,
    pack            TEXT NOT NULL,                   -- 64 hex
    last_read       TEXT NOT NULL,
    ok              INTEGER NOT NULL,
    PRIMARY KEY (repository, pack)
);

-- Coverage of restore verification: when each study was last restored and checked, from which snapshot.
CREATE TABLE study_reads (
    study_uid       TEXT PRIMARY KEY,
    snapshot_id     TEXT NOT NULL,
    last_read       TEXT NOT NULL,
    ok              INTEGER NOT NULL,
    run_id          INTEGER REFERENCES runs(id)
);

-- Coverage of replica audits: when each target (and medium) was last read back.
CREATE TABLE replica_audits (
    target          TEXT NOT NULL,
    location        TEXT NOT NULL,
    last_audit      TEXT NOT NULL,
    ok              INTEGER NOT NULL,
    objects         INTEGER NOT NULL,
    run_id          INTEGER REFERENCES runs(id),
    PRIMARY KEY (target, location)
);
