"""DICOM helpers: synthetic archives (`synth`) and parse checks (`parse`)."""
