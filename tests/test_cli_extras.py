"""What an operator meets around the commands: snapshot names that are unknown, ambiguous or mistyped,
`--json` on init/media init/unlock/metrics, the log of manual runs, shell completion, the man page,
and `make install`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from backupctl.actions.backup import run_backup
from backupctl.config import Config
from backupctl.logs import run_log_path
from tests.helpers import assert_one_line_error, cli, wait_for

REPO = Path(__file__).resolve().parent.parent


def test_unknown_ambiguous_and_mistyped_snapshots_are_bad_input(installation: Config, tmp_path: Path) -> None:
    snap = run_backup(installation, "pacs", replicate=False).snapshot_id
    assert snap
    nothing = "0" * 8 if not snap.startswith("0") else "f" * 8
    unknown = cli(installation, "restore", nothing, "--to", str(tmp_path / "a"))
    assert_one_line_error(unknown, 2, "no snapshot", "backupctl snapshots")
    typo = snap[:7] + ("0" if snap[7] != "0" else "1")
    mistyped = cli(installation, "restore", typo, "--to", str(tmp_path / "b"))
    assert_one_line_error(mistyped, 2, f"no snapshot {typo}", f"(did you mean {snap[:8]}?)")
    # a second snapshot file whose name shares the first digits (restic names files by content hash, so
    # two real snapshots share a prefix only by chance): the prefix must be refused, naming both
    twin = snap[:4] + ("0" if snap[4] != "0" else "1") + snap[5:]
    shutil.copy(installation.staging_repository / "snapshots" / snap,
                installation.staging_repository / "snapshots" / twin)
    ambiguous = cli(installation, "restore", snap[:4], "--to", str(tmp_path / "c"))
    assert_one_line_error(ambiguous, 2, f"snapshot {snap[:4]} is ambiguous: matches ", snap[:8], twin[:8])
    assert not (tmp_path / "c").exists()


def test_times_are_shown_with_their_zone(installation: Config) -> None:
    run_backup(installation, "pacs", replicate=False)
    for command in (("snapshots",), ("runs",)):
        berlin = cli(installation, *command, env={"TZ": "Europe/Berlin"}, check=True).stdout
        assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d CES?T", berlin), berlin
        utc = cli(installation, *command, env={"TZ": "UTC"}, check=True).stdout
        assert re.search(r"\d\d:\d\d:\d\d UTC", utc), utc


def _stale_restic_lock(config: Config) -> Path:
    """A lock left by a restic killed with SIGKILL (`backup --stdin` holds its lock while it waits for input)."""
    locks = config.staging_repository / "locks"
    env = {**os.environ, "RESTIC_REPOSITORY": str(config.staging_repository),
           "RESTIC_PASSWORD_FILE": str(config.resolve(config.settings.staging.password_file))}
    restic = subprocess.Popen(["restic", "backup", "--stdin", "--no-cache"], env=env, stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # restic writes NAME-tmp-N, then renames it: the lock exists once the plain name does
        wait_for(lambda: locks.is_dir() and any("-tmp-" not in p.name for p in locks.iterdir()), timeout=60,
                 what="restic's lock")
    finally:
        restic.kill()
        restic.wait()
    (lock,) = locks.iterdir()
    return lock


def test_json_on_media_init_unlock_and_metrics(installation: Config) -> None:
    labelled = json.loads(cli(installation, "media", "init", "offline", "--label", "DISK-A", "--json",
                              check=True).stdout)
    assert labelled["ok"] and labelled["label"] == "DISK-A" and labelled["media_id"]
    stale = _stale_restic_lock(installation)
    unlocked = json.loads(cli(installation, "unlock", "--json", check=True).stdout)
    assert unlocked["ok"] and unlocked["removed"] == [stale.name] and unlocked["kept"] == []
    run_backup(installation, "pacs", replicate=False)
    metrics = json.loads(cli(installation, "metrics", "--json", check=True).stdout)
    names = {s["name"] for s in metrics["samples"]}
    assert any(n.startswith("backupctl_") for n in names), names
    ok = [s for s in metrics["samples"] if s["name"] == "backupctl_job_last_success_timestamp_seconds"]
    assert ok and ok[0]["labels"] == {"job": "pacs"} and ok[0]["value"] > 0
    assert not stale.exists()


def test_manual_runs_are_logged_to_the_state_folder_without_their_arguments(installation: Config) -> None:
    cli(installation, "runs", check=True)
    failed = cli(installation, "backup", "run", "no-such-job")
    assert failed.returncode == 2 and "started by" not in failed.stderr   # the terminal shows the error only
    log = run_log_path(installation.state_dir)
    assert (log.stat().st_mode & 0o777) == 0o600
    lines = log.read_text().splitlines()
    assert any(line.endswith("backupctl runs: exit 0") for line in lines), lines
    assert any("backupctl backup run: exit 2: no job named 'no-such-job'" in line for line in lines), lines
    # every line carries its time with the zone's offset
    assert all(re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d ", line) for line in lines), lines


def test_the_run_log_rotates(installation: Config) -> None:
    from backupctl import logs

    log = run_log_path(installation.state_dir)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("x" * logs.RUN_LOG_MAX_BYTES)
    cli(installation, "runs", check=True)
    assert log.with_name(log.name + ".1").stat().st_size == logs.RUN_LOG_MAX_BYTES
    assert "backupctl runs: exit 0" in log.read_text()


def test_shell_completion_is_offered_and_completes_commands() -> None:
    env = {**os.environ, "_BACKUPCTL_COMPLETE": "complete_bash", "COMP_WORDS": "backupctl med", "COMP_CWORD": "1"}
    done = subprocess.run([sys.executable, "-m", "backupctl"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.split() == ["media"], done
    shown = subprocess.run([sys.executable, "-m", "backupctl", "--show-completion", "bash"], capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0 and "_backupctl_completion" in shown.stdout


def _visible_commands(group, prefix: tuple[str, ...] = ()):  # noqa: ANN001, ANN202 - a typer.Typer
    for command in group.registered_commands:
        if not command.hidden:
            yield (*prefix, command.name or command.callback.__name__)
    for sub in group.registered_groups:
        yield from _visible_commands(sub.typer_instance, (*prefix, sub.name))


def test_the_man_page_lists_every_command_and_renders_cleanly(tmp_path: Path) -> None:
    from backupctl.cli import app

    page = cli(None, "man", check=True).stdout
    assert page.startswith(".TH BACKUPCTL 1 ")
    sections = set(re.findall(r"^\.SS (.+)$", page, flags=re.M))
    paths = list(_visible_commands(app))
    assert ("backup", "run") in paths and ("config", "check") in paths
    for path in paths:
        assert " ".join(path).replace("-", "\\-") in sections, path
    (tmp_path / "backupctl.1").write_text(page)
    rendered = subprocess.run(["groff", "-man", "-Tutf8", "-ww", str(tmp_path / "backupctl.1")],
                              capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0 and rendered.stderr == "", rendered.stderr
    text = re.sub(".\x08", "", rendered.stdout)   # bold and underline are overstrikes on a terminal device
    assert "backup run" in text and "EXIT STATUS" in text


def test_make_install_links_the_entry_point_idempotently(tmp_path: Path) -> None:
    venv = Path(sys.executable).parent.parent
    args = ["make", "-s", "-C", str(REPO), "-o", "venv", "install", f"VENV={venv}", f"PREFIX={tmp_path}"]
    for _ in range(2):   # a second run changes nothing and does not fail
        done = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    link = tmp_path / "bin" / "backupctl"
    assert link.is_symlink() and link.resolve() == (venv / "bin" / "backupctl").resolve()
    version = subprocess.run([str(link), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith("backupctl ")


def test_status_messages_are_cut_between_words_never_inside_one():
    from backupctl.cli.common import clip

    message = "failed: " + " ".join(f"/srv/pacs/study-{i}/instance-{i}.dcm: hash-mismatch" for i in range(8))
    cut = clip(message, 100)
    assert len(cut) <= 100 and cut.endswith(" …")
    kept = cut.removesuffix(" …").split()
    assert kept == message.split()[: len(kept)]          # whole words only, in order
    assert clip("short message", 100) == "short message"
