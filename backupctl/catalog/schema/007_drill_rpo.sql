-- Recovery point per drill: the target, and the newest snapshot of the job (in the catalog, and in the
-- drilled copy) when the drill chose its snapshot, so the report can tell a copy that lagged.
ALTER TABLE drill_runs ADD COLUMN rpo_seconds REAL;                -- the target; NULL when none is configured
ALTER TABLE drill_runs ADD COLUMN job_newest_snapshot_id TEXT;     -- the job's newest snapshot the catalog knew
ALTER TABLE drill_runs ADD COLUMN job_newest_snapshot_time TEXT;
ALTER TABLE drill_runs ADD COLUMN copy_newest_snapshot_time TEXT;  -- the newest snapshot of the job in the copy
