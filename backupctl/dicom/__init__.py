"""Everything pydicom: synthetic archives (`synth`) and parse checks."""
