"""The attack simulator and generated normal days live in backupctl.dev.ransomware (the demo uses them too)."""

from backupctl.dev.ransomware import (  # noqa: F401 - re-exported for the tests
    RANSOM_NOTE,
    Attack,
    attack,
    dicom_files,
    header_correction,
    normal_day,
    plant_polyglot,
)
