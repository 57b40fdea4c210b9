-- Restore by what the admin is given (issue 14): the study index learns each study's date and the keyed
-- digests (HMAC-SHA-256, backupctl.identifiers) of its Patient ID and Accession Number. Never the values:
-- the catalog must not become a patient index in clear. Names are not indexed at all (a wildcard cannot be
-- hashed): they are matched on the sealed names of the candidate snapshots' signed manifests.
ALTER TABLE snapshot_studies ADD COLUMN study_date TEXT;
ALTER TABLE snapshot_studies ADD COLUMN patient_digest TEXT;
ALTER TABLE snapshot_studies ADD COLUMN accession_digest TEXT;
CREATE INDEX snapshot_studies_patient ON snapshot_studies(patient_digest);
CREATE INDEX snapshot_studies_accession ON snapshot_studies(accession_digest);
CREATE INDEX snapshot_studies_date ON snapshot_studies(study_date);
