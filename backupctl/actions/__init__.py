"""Thin use-cases: each takes a Config and a Progress, drives restic/targets, records in the catalog."""
