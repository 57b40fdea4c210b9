-- Job runs: one row per `backup run` (and later verify/drill runs reuse `kind`).
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL DEFAULT 'backup',      -- backup | replicate | verify | drill | ...
    job         TEXT NOT NULL,
    started     TEXT NOT NULL,                       -- UTC ISO 8601
    finished    TEXT,
    status      TEXT NOT NULL DEFAULT 'running',     -- running | success | partial | failed | interrupted
    error       TEXT,
    bytes       INTEGER,                             -- bytes processed by restic
    bytes_added INTEGER,                             -- new bytes stored in the repository
    files       INTEGER,
    seconds     REAL,                                -- monotonic duration
    snapshot_id TEXT,
    pid         INTEGER,
    host        TEXT
);
CREATE INDEX runs_job_started ON runs(job, started);

-- Snapshots of the staging repository, by restic's full id.
CREATE TABLE snapshots (
    id          TEXT PRIMARY KEY,                    -- restic full snapshot id (64 hex)
    short_id    TEXT NOT NULL,
    job         TEXT NOT NULL,
    time        TEXT NOT NULL,                       -- restic's snapshot time
    run_id      INTEGER REFERENCES runs(id),
    size        INTEGER,                             -- bytes of the files in the snapshot
    files       INTEGER,
    tags        TEXT NOT NULL DEFAULT '[]',          -- JSON list
    paths       TEXT NOT NULL DEFAULT '[]',          -- JSON list
    status      TEXT NOT NULL DEFAULT 'complete',    -- complete | partial (restic exit 3) | forgotten
    created     TEXT NOT NULL
);
CREATE INDEX snapshots_job_time ON snapshots(job, time);

-- Where each snapshot lives besides staging: target name + location (medium label, bucket/prefix).
CREATE TABLE replicas (
    snapshot_id TEXT NOT NULL REFERENCES snapshots(id),
    target      TEXT NOT NULL,
    location    TEXT NOT NULL,
    since       TEXT NOT NULL,                        -- first time the snapshot was complete there
    last_seen   TEXT NOT NULL,
    PRIMARY KEY (snapshot_id, target, location)
);

-- Offline media: one row per labelled disk.
CREATE TABLE media (
    label       TEXT NOT NULL,
    target      TEXT NOT NULL,
    media_id    TEXT NOT NULL,                        -- uuid written in the label file at `media init`
    created     TEXT NOT NULL,
    last_sync   TEXT,
    last_sync_files INTEGER,
    last_sync_bytes INTEGER,
    PRIMARY KEY (target, label)
);
