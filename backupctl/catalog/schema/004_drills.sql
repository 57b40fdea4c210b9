-- Restore drills. A drill is a run (runs.kind = 'drill'); its id is the run's id, so `runs` and
-- `drill show ID` agree. Status, start, end and error live in `runs`; the drill's own facts here.
CREATE TABLE drill_runs (
    run_id              INTEGER PRIMARY KEY REFERENCES runs(id),
    name                TEXT NOT NULL,                 -- drill definition name
    job                 TEXT NOT NULL,
    copy                TEXT NOT NULL,                 -- staging | target name
    snapshot_rule       TEXT NOT NULL,                 -- latest | random:<days> | <id>
    snapshot_id         TEXT,                          -- the snapshot drilled (full id), once selected
    snapshot_time       TEXT,
    scope               TEXT NOT NULL,                 -- all | sample:<K> | studies
    depth               TEXT NOT NULL,                 -- hash | dicom | pacs
    seed                INTEGER NOT NULL,              -- drives every random choice; rerun with it to repeat
    rto_seconds         REAL NOT NULL,                 -- the target
    recovery_seconds    REAL,                          -- measured: select through the last check (no clean-up)
    rto_basis           TEXT,                          -- measured | estimate (sampled drills compare the estimate)
    rto_met             INTEGER,                       -- 1 | 0 | NULL (did not get that far)
    first_study_seconds REAL,                          -- drill start until the first study was restored and verified
    first_study_uid     TEXT,
    files               INTEGER,                       -- files restored and checked
    bytes               INTEGER,
    archive_files       INTEGER,                       -- the whole snapshot, from its manifest
    archive_bytes       INTEGER,
    estimated_full_seconds REAL,                       -- sampled drills: full restore extrapolated (an estimate)
    passed              INTEGER,                       -- 1 when every check held and the RTO was met
    scratch             TEXT,
    scratch_removed     INTEGER NOT NULL DEFAULT 0,
    manifest_sha256     TEXT,
    key_id              TEXT                           -- the key the manifest was signed with
);
CREATE INDEX drill_runs_name ON drill_runs(name, run_id);

-- Each phase's duration (monotonic clock) and what it moved.
CREATE TABLE drill_phases (
    run_id      INTEGER NOT NULL REFERENCES drill_runs(run_id),
    seq         INTEGER NOT NULL,
    phase       TEXT NOT NULL,                         -- fetch | select | restore | hash | dicom | ingest | query | cleanup
    status      TEXT NOT NULL,                         -- ok | failed | skipped | not-run
    seconds     REAL NOT NULL DEFAULT 0,
    bytes       INTEGER NOT NULL DEFAULT 0,
    files       INTEGER NOT NULL DEFAULT 0,
    detail      TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, phase)
);

-- Pass/fail per check.
CREATE TABLE drill_checks (
    run_id      INTEGER NOT NULL REFERENCES drill_runs(run_id),
    seq         INTEGER NOT NULL,
    name        TEXT NOT NULL,                         -- copy | snapshot | manifest | scope | space | restore | hash | dicom | ... | rto
    status      TEXT NOT NULL,                         -- pass | fail | skipped
    checked     INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    detail      TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, name)
);

-- What the checks found, file by file (capped per drill; the check row keeps the full count).
CREATE TABLE drill_problems (
    run_id      INTEGER NOT NULL REFERENCES drill_runs(run_id),
    seq         INTEGER NOT NULL,
    check_name  TEXT NOT NULL,
    severity    TEXT NOT NULL,                         -- error (fails the check) | warning
    kind        TEXT NOT NULL,                         -- missing | hash-mismatch | truncated | restore-error | ...
    path        TEXT,                                  -- the file, as its path in the snapshot
    detail      TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, seq)
);

-- The studies a drill restored: every one for sampled/listed scopes, the first and failed ones for 'all'.
CREATE TABLE drill_studies (
    run_id      INTEGER NOT NULL REFERENCES drill_runs(run_id),
    study_uid   TEXT NOT NULL,
    files       INTEGER NOT NULL,
    bytes       INTEGER NOT NULL,
    ok          INTEGER NOT NULL,
    verified_seconds REAL,                             -- since drill start
    PRIMARY KEY (run_id, study_uid)
);
