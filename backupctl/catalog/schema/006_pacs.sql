-- One row per consistent copy of an Orthanc source (stop, copy, start): the PACS downtime of each run.
CREATE TABLE pacs_copies (
    id                      INTEGER PRIMARY KEY,
    run_id                  INTEGER REFERENCES runs(id),
    job                     TEXT NOT NULL,
    recorded                TEXT NOT NULL,           -- UTC ISO 8601
    status                  TEXT NOT NULL,           -- ok | failed
    was_running             INTEGER NOT NULL,        -- 0: Orthanc was stopped already; copied, left stopped
    stopped_at              TEXT,                    -- stop issued (UTC)
    restarted_at            TEXT,                    -- /system answered again (UTC); NULL: not seen back
    downtime_seconds        REAL,                    -- stop issued -> /system answers (monotonic)
    stop_seconds            REAL,
    copy_seconds            REAL,
    start_seconds           REAL,
    prelink_seconds         REAL,                    -- linking the storage while Orthanc ran (no downtime)
    storage_files           INTEGER,
    storage_bytes           INTEGER,
    linked_while_stopped    INTEGER,
    index_bytes             INTEGER,
    instances_before        INTEGER,                 -- /statistics before the stop (approximate)
    error                   TEXT
);
CREATE INDEX pacs_copies_job ON pacs_copies(job, recorded);
