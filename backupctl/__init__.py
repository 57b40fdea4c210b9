"""backupctl: keeps PACS imaging archives recoverable (restic, offline media, S3 Object Lock)."""

__version__ = "0.1.0"
