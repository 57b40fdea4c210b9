"""What the benchmarks run on: a synthetic CT archive, backupctl installations and raw restic repositories.

The archive is generated once per size and kept in the cache folder (writing 2 GB of DICOM takes a while);
each bench run works on a hard-linked copy of it, and files are only ever changed by replacing them, so the
cached original stays pristine. Both sides of a restic comparison start from a copy of one template
repository: restic calibrates its key derivation at `init`, and two separately initialised repositories
would pay different costs on every open, which would show up as a difference between A and B.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from backupctl.actions.init import initialize
from backupctl.config import Config, load_config
from backupctl.dicom.synth import ArchiveSpec, write_archive
from backupctl.secrets import write_private_file
from benchmarks.harness import run_command

PIXEL_ROWS = 512                          # CT: 512 x 512 x 16 bit = 512 KiB of pixels per file
INSTANCES_PER_SERIES = 50
SERIES_PER_STUDY = 2
STUDIES_PER_PATIENT = 2
HEADER_BYTES = 1_500                      # the DICOM header around the pixels, roughly
JOB = "pacs"
MEDIA_TARGET = "offline"
MEDIA_LABEL = "BENCH-A"
PASSWORD = b"benchmark-only-password\n"   # a throw-away repository: the secret protects nothing

CONFIG_TEXT = """\
[catalog]
path = "var/catalog.sqlite"

[staging]
repository = "var/staging-repo"
password_file = "secrets/restic-password"

[targets.offline]
type = "media"
mount = "media-disk"
labels = ["BENCH-A"]
allow_unmounted = true
"""

JOB_TEXT = """\
name = "{job}"
sources = ["{source}"]
targets = ["{target}"]
"""


# the archive ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Archive:
    root: Path
    files: list[Path]
    bytes: int
    spec: ArchiveSpec


def spec_for(size_bytes: int, rows: int = PIXEL_ROWS, seed: int = 1) -> ArchiveSpec:
    """A PACS-shaped archive (series of 50 slices, 2 series a study, 2 studies a patient) of about
    `size_bytes`, rounded up to whole series."""
    per_file = rows * rows * 2 + HEADER_BYTES
    files = max(1, math.ceil(size_bytes / per_file))
    instances = min(INSTANCES_PER_SERIES, files)
    series = min(SERIES_PER_STUDY, math.ceil(files / instances))
    studies = min(STUDIES_PER_PATIENT, math.ceil(files / (instances * series)))
    patients = math.ceil(files / (instances * series * studies))
    return ArchiveSpec(patients=patients, studies_per_patient=studies, series_per_study=series,
                       instances_per_series=instances, rows=rows, columns=rows, seed=seed)


def cached_archive(cache: Path, spec: ArchiveSpec) -> Archive:
    """The archive for `spec`, generated into `cache` unless a complete copy is already there."""
    key = (f"archive-{spec.rows}x{spec.columns}-{spec.patients}p{spec.studies_per_patient}s"
           f"{spec.series_per_study}r{spec.instances_per_series}i-seed{spec.seed}")
    root = cache / key
    marker = cache / f"{key}.complete"        # beside the archive, so it is never part of a backup
    if not marker.exists():
        shutil.rmtree(root, ignore_errors=True)
        written = write_archive(root, spec)
        marker.write_text(json.dumps({"files": len(written), "bytes": sum(w.size for w in written)}))
    files = sorted(root.rglob("*.dcm"))
    expected = json.loads(marker.read_text())["files"]
    if len(files) != expected:
        marker.unlink()
        raise RuntimeError(f"cached archive {root} has {len(files)} files, not {expected}: run again to rebuild")
    return Archive(root, files, sum(f.stat().st_size for f in files), spec)


def linked_copy(archive: Archive, dest: Path) -> Archive:
    """A hard-linked copy: free to make, and safe as long as files are replaced, never written in place."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(archive.root, dest, copy_function=os.link)
    files = [dest / f.relative_to(archive.root) for f in archive.files]
    return Archive(dest, files, archive.bytes, archive.spec)


def change_files(archive: Archive, fraction: float, round_no: int) -> list[Path]:
    """Give `fraction` of the files (at least one) new pixel bytes, as a PACS rewriting instances would.
    Each file is replaced (new inode), which keeps the hard-linked original intact."""
    rng = random.Random(round_no)
    count = max(1, round(len(archive.files) * fraction))
    chosen = rng.sample(archive.files, count)
    for path in chosen:
        data = bytearray(path.read_bytes())
        middle = len(data) // 2
        data[middle:middle + 4096] = rng.randbytes(min(4096, len(data) - middle))
        tmp = path.with_name(path.name + ".bench-tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return chosen


# restic repositories -------------------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """The environment without stray RESTIC_* settings (as backupctl's own driver does)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}


@dataclass(frozen=True)
class RawRepo:
    """A restic repository driven directly, the baseline side of every restic comparison."""

    root: Path

    @property
    def repository(self) -> Path:
        return self.root / "repo"

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    def env(self) -> dict[str, str]:
        env = clean_env()
        env.update(RESTIC_REPOSITORY=str(self.repository), RESTIC_PASSWORD_FILE=str(self.password_file),
                   RESTIC_CACHE_DIR=str(self.root / "cache"))
        return env

    def argv(self, *args: str) -> list[str]:
        return ["restic", *args]


def make_template(root: Path) -> RawRepo:
    """One freshly initialised repository; every repository of the run is a copy of it."""
    repo = RawRepo(root)
    shutil.rmtree(root, ignore_errors=True)
    write_private_file(repo.password_file, PASSWORD)
    run_command(repo.argv("init"), env=repo.env())
    return repo


def fresh_raw_repo(template: RawRepo, root: Path) -> RawRepo:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    shutil.copytree(template.repository, root / "repo")
    write_private_file(root / "password", PASSWORD)
    return RawRepo(root)


# backupctl installations ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Installation:
    """A throw-away backupctl installation: config, job over the source, staging repo, media target."""

    root: Path
    config: Config

    @property
    def config_path(self) -> Path:
        return self.config.path

    def cli(self, *args: str) -> list[str]:
        """argv for the backupctl CLI as an operator runs it (a new process: start-up cost included)."""
        return [sys.executable, "-m", "backupctl", "--config", str(self.config_path), "--quiet", *args]

    def env(self) -> dict[str, str]:
        return clean_env()

    @property
    def media_mount(self) -> Path:
        return self.root / "media-disk"


def fresh_installation(template: RawRepo, root: Path, source: Path) -> Installation:
    """An installation whose staging repository is a copy of the template (same keys as the raw side)."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    write_private_file(root / "secrets" / "restic-password", PASSWORD)
    shutil.copytree(template.repository, root / "var" / "staging-repo")
    (root / "media-disk").mkdir()
    config, _ = initialize(root, CONFIG_TEXT)
    jobs = config.resolve(config.settings.paths.jobs)
    (jobs / f"{JOB}.toml").write_text(JOB_TEXT.format(job=JOB, source=source, target=MEDIA_TARGET))
    return Installation(root, load_config(root / "backupctl.toml"))
