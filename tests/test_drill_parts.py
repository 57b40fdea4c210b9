"""Restore drill parts that need no restic: choices, patterns, the phase clock, config checks, CLI input."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backupctl.cli.drill import parse_since
from backupctl.config import Config
from backupctl.drills.charts import nice_ticks
from backupctl.drills.model import PhaseClock
from backupctl.drills.select import SelectionError, choose_scope, choose_snapshot
from backupctl.errors import UsageError
from backupctl.manifest import DICOM, OTHER, Entry, Manifest
from backupctl.restic import Snapshot
from tests.helpers import assert_one_line_error, cli


def _snap(n: int, time: str) -> Snapshot:
    return Snapshot(id=f"{n:02d}" + "0" * 62, short_id=f"{n:02d}000000", time=time, paths=[], tags=[], hostname="h")


SNAPS = [_snap(1, "2024-05-01T02:00:00.123456789Z"), _snap(3, "2024-05-20T02:00:00Z"),
         _snap(2, "2024-05-10T02:00:00.5+02:00")]
NOW = datetime(2024, 5, 21, tzinfo=UTC)


def test_latest_snapshot_is_the_newest_by_time_not_by_listing_order() -> None:
    assert choose_snapshot(SNAPS, "latest", random.Random(0), NOW).short_id == "03000000"


def test_random_snapshot_stays_within_the_window_and_follows_the_seed() -> None:
    picks = {choose_snapshot(SNAPS, "random:15", random.Random(seed), NOW).short_id for seed in range(40)}
    assert picks == {"02000000", "03000000"}                # the 1 May snapshot is older than 15 days
    same = [choose_snapshot(SNAPS, "random:15", random.Random(7), NOW).id for _ in range(3)]
    assert len(set(same)) == 1
    with pytest.raises(SelectionError, match="last 1 day"):
        choose_snapshot(SNAPS, "random:1", random.Random(0), datetime(2024, 6, 30, tzinfo=UTC))


def test_snapshot_by_id_prefix() -> None:
    assert choose_snapshot(SNAPS, "02000000", random.Random(0)).short_id == "02000000"
    with pytest.raises(SelectionError, match="not in the copy"):
        choose_snapshot(SNAPS, "ffffffff", random.Random(0))
    twins = [SNAPS[0], Snapshot("01" + "1" * 62, "01111111", SNAPS[1].time, [], [], "h")]
    with pytest.raises(SelectionError, match="ambiguous"):
        choose_snapshot(twins, "01", random.Random(0))
    with pytest.raises(SelectionError, match="no snapshot"):
        choose_snapshot([], "latest", random.Random(0))


def _manifest(layout: dict[str, list[str]], extra: list[str] = ()) -> Manifest:
    entries = [Entry(path, 10, 0, 0, DICOM, "0" * 64, {"study": study}) for study, paths in layout.items()
               for path in paths]
    entries += [Entry(path, 5, 0, 0, OTHER, "1" * 64) for path in extra]
    return Manifest({"type": "header"}, sorted(entries, key=lambda e: e.path))


FOLDERS = {f"1.2.{i}": [f"/pacs/P{i % 2}/1.2.{i}/s1/{j}.dcm" for j in range(3)] for i in range(6)}


def test_sample_scope_is_k_studies_chosen_by_the_seed() -> None:
    manifest = _manifest(FOLDERS, ["/pacs/README.txt"])
    picks = [tuple(choose_scope(manifest, "sample:2", [], random.Random(seed)).studies) for seed in range(10)]
    assert all(len(set(p)) == 2 for p in picks) and len(set(picks)) > 3
    assert choose_scope(manifest, "sample:2", [], random.Random(4)).studies == list(picks[4])
    scope = choose_scope(manifest, "sample:2", [], random.Random(4))
    assert scope.files == 6 and not scope.whole
    assert len(choose_scope(manifest, "sample:99", [], random.Random(0)).studies) == 6


def test_whole_scope_holds_every_file_and_every_study() -> None:
    manifest = _manifest(FOLDERS, ["/pacs/README.txt"])
    scope = choose_scope(manifest, "all", [], random.Random(1))
    assert scope.whole and scope.files == 19 and sorted(scope.studies) == sorted(FOLDERS)


def test_listed_studies_must_be_in_the_snapshot() -> None:
    manifest = _manifest(FOLDERS)
    assert choose_scope(manifest, "studies", ["1.2.3", "1.2.1"], random.Random(0)).studies == ["1.2.3", "1.2.1"]
    with pytest.raises(SelectionError, match="1 listed study is not in the snapshot: 9.9"):
        choose_scope(manifest, "studies", ["1.2.3", "9.9"], random.Random(0))


def test_phase_clock_adds_up_stretches_of_a_phase() -> None:
    ticks = iter([0.0, 1.0, 3.0, 10.0, 10.5, 12.0])
    clock = PhaseClock(now=lambda: next(ticks))
    with clock.phase("restore"):
        pass
    with clock.phase("restore"):
        pass
    assert clock.phases["restore"].seconds == 2.5 and clock.phases["restore"].status == "ok"
    assert clock.elapsed() == 12.0
    clock.skip("fetch", "local")
    assert clock.phases["fetch"].status == "skipped"


def test_nice_ticks_cover_the_maximum() -> None:
    assert nice_ticks(4.2) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert nice_ticks(0.03)[-1] >= 0.03 and nice_ticks(1234)[-1] >= 1234


def test_since_accepts_dates_ages_and_refuses_words() -> None:
    assert parse_since("2024-05-01") == "2024-05-01T00:00:00.000000+00:00"
    assert parse_since("30d") < datetime.now(UTC).isoformat()
    with pytest.raises(UsageError):
        parse_since("last tuesday")


def test_scratch_inside_a_source_is_refused_by_config_check(installation: Config, tmp_path: Path) -> None:
    (tmp_path / "restore_drills" / "bad.toml").write_text(
        f'job = "pacs"\nscratch = "{tmp_path / "archive" / "tmp"}"\n')
    result = cli(installation.path, "config", "check")
    assert result.returncode == 2
    assert "bad.toml: scratch:" in result.stderr and "source of job pacs" in result.stderr


@pytest.mark.slow
def test_report_input_errors_are_one_line(installation: Config, tmp_path: Path) -> None:
    assert_one_line_error(cli(installation, "drill", "report", "--since", "soon"), 2, "--since")
    assert_one_line_error(cli(installation, "drill", "report", "--format", "pdf"), 2, "--format")
    assert_one_line_error(cli(installation, "drill", "report", "--verify", str(tmp_path / "none.html")), 2,
                          "cannot read")
    (tmp_path / "plain.html").write_text("<!DOCTYPE html><p>hello</p>\n")
    assert_one_line_error(cli(installation, "drill", "report", "--verify", str(tmp_path / "plain.html")), 1,
                          "no backupctl signature")
    assert_one_line_error(cli(installation, "drill", "run", "nope"), 2, "no drill named 'nope'")


def test_example_drill_definitions_are_valid() -> None:
    import tomllib

    from backupctl.config import Drill

    examples = sorted((Path(__file__).parent.parent / "restore_drills").glob("*.toml"))
    assert examples
    for path in examples:
        drill = Drill.model_validate({"name": path.stem, **tomllib.loads(path.read_text())})
        assert drill.schedule and drill.rto_minutes > 0


def test_scratch_removal_takes_read_only_folders_and_many_files(tmp_path: Path) -> None:
    from backupctl.drills.scratch import UNLINK_THREADS, remove_scratch

    scratch = tmp_path / "drill-1-1-x"
    locked = scratch / "restore" / "srv" / "locked"
    locked.mkdir(parents=True)
    for i in range(UNLINK_THREADS * 40):                  # enough to go the parallel way
        (scratch / "restore" / "srv" / f"f{i}.dcm").write_bytes(b"x" * 10)
    (locked / "a.dcm").write_bytes(b"y")
    (locked / "a.dcm").chmod(0o444)
    locked.chmod(0o555)                                   # restic restores folders with their modes
    (scratch / "restore" / "link").symlink_to(tmp_path)  # a symlink goes, never what it points to
    assert remove_scratch(scratch) and not scratch.exists() and tmp_path.exists()
