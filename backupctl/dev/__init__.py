"""Development helpers that run real servers on 127.0.0.1 for tests and trials (never for keeping backups)."""
