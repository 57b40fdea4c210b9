"""Ransomware readiness: suspect snapshots at backup time, the last clean snapshot, the recovery kit."""
