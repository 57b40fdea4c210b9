"""The S3 Object Lock copy: client and credentials, locked uploads that are read back, retention extension,
audit, point-in-time recovery, the WORM probe, expiry, and the embedded S3 server for demo and tests.

`backupctl.targets.s3.S3Target` is the `Target` the replication action uses; the rest lives here.
"""
