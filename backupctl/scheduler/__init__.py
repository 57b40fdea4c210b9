"""The scheduler daemon (`backupctl scheduler run`): APScheduler 3.x with a persistent SQLite job store.

Modules: `triggers` (cron text to triggers), `kinds` (what a scheduled job runs: backup -> replicate -> verify,
drills), `daemon` (the process: signals, reload, stop), `runner` (one scheduled execution in a child process),
`state` (the pid lock and the state file `status` reads), `logs` (text or JSON-lines logging).
Kept import-light: `config` imports `triggers` from here.
"""
