"""Benchmarks: backupctl against the tools it drives (restic, openssl, pydicom, cp, boto3), as ratios.

Run with `make bench` or `python -m benchmarks.run --help`. Results land in `benchmarks/results/`.
"""
