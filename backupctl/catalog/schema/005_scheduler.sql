-- The scheduler daemon (issue 6): one row per scheduled execution (a chain backup -> replicate -> verify, or
-- a drill), including the ones that did not run (missed beyond the grace time, or skipped while the previous
-- one still ran). The work itself is in `runs`; `run_ids` links to it.
CREATE TABLE scheduler_runs (
    id            INTEGER PRIMARY KEY,
    schedule_id   TEXT NOT NULL,                 -- 'backup:<job>' | 'drill:<drill>'
    kind          TEXT NOT NULL,                 -- backup | drill
    name          TEXT NOT NULL,                 -- job or drill name
    execution     TEXT NOT NULL,                 -- uuid shared by the daemon's and the child's log lines
    scheduled_for TEXT,                          -- the fire time it ran for, UTC ISO 8601, when known
    started       TEXT NOT NULL,
    finished      TEXT,
    status        TEXT NOT NULL DEFAULT 'running',  -- running | success | partial | failed | interrupted | missed | skipped
    run_ids       TEXT NOT NULL DEFAULT '[]',    -- JSON list of runs.id written by this execution
    steps         TEXT NOT NULL DEFAULT '[]',    -- JSON list of {step, status, error}
    error         TEXT,
    seconds       REAL,
    daemon_pid    INTEGER,
    child_pid     INTEGER,
    host          TEXT
);
CREATE INDEX scheduler_runs_schedule ON scheduler_runs(schedule_id, id);
