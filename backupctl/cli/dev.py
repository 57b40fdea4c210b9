"""`dev ...`: tools for trying backupctl and for its tests (synthetic archives, embedded servers)."""

# no `from __future__ import annotations`: typer would eval every string annotation at each start (common.py)

from pathlib import Path
from typing import Annotated

import typer

from backupctl.cli.common import human_bytes, out

app = typer.Typer(help="Developer tools: synthetic archives, embedded servers.", no_args_is_help=True)


@app.command("synth-archive")
def synth_archive(
    directory: Annotated[Path, typer.Argument(help="Folder to write the archive into.")],
    patients: Annotated[int, typer.Option(min=1)] = 3,
    studies_per_patient: Annotated[int, typer.Option(min=1)] = 2,
    series_per_study: Annotated[int, typer.Option(min=1)] = 2,
    instances_per_series: Annotated[int, typer.Option(min=1)] = 4,
    rows: Annotated[int, typer.Option(min=8, help="Image rows (512 for CT-sized files).")] = 64,
    columns: Annotated[int, typer.Option(min=8)] = 64,
    seed: Annotated[int, typer.Option()] = 0,
) -> None:
    """Write a synthetic PACS archive of valid DICOM files (deterministic for a seed)."""
    from backupctl.dicom.synth import ArchiveSpec, write_archive  # on use: pydicom and numpy cost ~0.2 s

    spec = ArchiveSpec(patients, studies_per_patient, series_per_study, instances_per_series, rows, columns, seed)
    written = write_archive(directory, spec)
    out.print(f"wrote {len(written)} DICOM files ({human_bytes(sum(w.size for w in written))}) "
              f"for {patients} patients into {directory}")
