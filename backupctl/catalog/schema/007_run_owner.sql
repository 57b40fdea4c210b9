-- A run belongs to one process: its pid AND the process's start time (clock ticks after boot, from
-- /proc/PID/stat), so a pid reused by another process never keeps a dead run 'running'.
ALTER TABLE runs ADD COLUMN pid_start INTEGER;
