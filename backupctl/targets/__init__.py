"""Replica targets: one interface (`base.Target`), implemented by `media` (offline disks) and `s3`."""
