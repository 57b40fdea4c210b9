"""PACS integration with Orthanc.

- `orthanc`: a REST client and a controller for throw-away Orthanc instances (drills, demo, tests).
- `source`: the `orthanc` job source: stop, copy index + config, hard-link storage, start (always).
- `ingest`: sending DICOM files to an Orthanc over REST (concurrent, retried, `Status` checked).
- `drill`: the `pacs` drill depth: restored studies are back and queryable in a fresh Orthanc.
- `layout`: `--as-orthanc DIR`, a restored Orthanc (config, index, storage) ready to start.
"""
