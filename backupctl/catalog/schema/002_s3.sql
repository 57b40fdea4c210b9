-- S3 Object Lock copies: every object version backupctl uploaded, with what the server confirmed.
CREATE TABLE s3_objects (
    target       TEXT NOT NULL,                      -- target name in backupctl.toml
    location     TEXT NOT NULL,                      -- bucket/prefix
    key          TEXT NOT NULL,                      -- repository-relative path ("data/ab/ab12...")
    version_id   TEXT NOT NULL,                      -- the version we uploaded; audits and recovery use it
    size         INTEGER NOT NULL,
    sha256       TEXT NOT NULL,                      -- hex
    md5          TEXT NOT NULL,                      -- hex (single-PUT ETag), or the multipart ETag
    lock_mode    TEXT NOT NULL,                      -- COMPLIANCE | GOVERNANCE, as read back
    retain_until TEXT NOT NULL,                      -- UTC ISO 8601, as read back from the server
    required_until TEXT NOT NULL,                    -- what policy required at the last upload/extension
    uploaded     TEXT NOT NULL,
    extended     TEXT,                               -- last PutObjectRetention that moved retain_until
    lock_fixed   INTEGER NOT NULL DEFAULT 0,         -- server dropped the lock headers; set afterwards
    state        TEXT NOT NULL DEFAULT 'live',       -- live | replaced (re-uploaded) | expired (deleted)
    PRIMARY KEY (target, location, key, version_id)
);
CREATE INDEX s3_objects_live ON s3_objects(target, location, state, key);

-- What we learned about each endpoint/bucket (quirks are recorded, not assumed).
CREATE TABLE s3_endpoints (
    target       TEXT NOT NULL,
    location     TEXT NOT NULL,
    endpoint     TEXT NOT NULL,
    drops_lock_headers INTEGER NOT NULL DEFAULT 0,   -- a PUT/multipart lost its lock headers at least once
    noted        TEXT NOT NULL,
    last_probe   TEXT,                               -- JSON of the last `s3 probe` against this endpoint
    PRIMARY KEY (target, location)
);
