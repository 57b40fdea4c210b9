"""scripts/install-system-deps.sh, run as a fresh machine would see it: a stub apt-get records its calls.

CI's machine has every package already, so a broken install path would never show there; these runs
take the path a fresh Debian machine takes, with and without a pre-existing policy-rc.d and systemd.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "install-system-deps.sh"
# What the script itself needs from the system; restic and the other wanted commands are left out,
# so the script sees them missing.
TOOLS = ["bash", "env", "id", "tee", "chmod", "rm", "tail", "cat", "printf", "dirname"]


def _stub(path: Path, body: str) -> None:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


@pytest.fixture
def machine(tmp_path: Path) -> dict[str, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    calls = tmp_path / "apt-calls"
    _stub(bin_dir / "apt-get", f'echo "$@" >> {calls}\necho "apt-get says: $1"\n')
    return {"root": tmp_path, "bin": bin_dir, "calls": calls, "policy": tmp_path / "policy-rc.d",
            "systemd": tmp_path / "run-systemd", "log": tmp_path / "apt.log"}


def _run(machine: dict[str, Path]) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(machine["bin"]), "BACKUPCTL_POLICY_RC": str(machine["policy"]),
           "BACKUPCTL_SYSTEMD_DIR": str(machine["systemd"]), "BACKUPCTL_APT_LOG": str(machine["log"]),
           "HOME": str(machine["root"])}
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


def _installed(machine: dict[str, Path]) -> list[str]:
    return machine["calls"].read_text().splitlines()


def test_fresh_machine_without_policy_file_installs_and_removes_the_policy_it_made(machine):
    result = _run(machine)
    assert result.returncode == 0, result.stderr
    calls = _installed(machine)
    assert calls[0].startswith("update")
    assert calls[1].startswith("install") and "restic" in calls[1].split()
    assert not machine["policy"].exists()
    assert "apt-get says" in machine["log"].read_text()


def test_a_pre_existing_policy_file_is_left_untouched_and_the_script_exits_0(machine):
    machine["policy"].write_text("#!/bin/sh\n# the machine's own\nexit 0\n")
    machine["policy"].chmod(0o700)
    result = _run(machine)
    assert result.returncode == 0, result.stderr
    assert machine["policy"].read_text() == "#!/bin/sh\n# the machine's own\nexit 0\n"
    assert machine["policy"].stat().st_mode & 0o777 == 0o700
    assert any(c.startswith("install") for c in _installed(machine))


def test_the_policy_forbids_service_starts_while_apt_runs(machine):
    # apt's stub copies the policy file as it finds it during the install.
    seen = machine["root"] / "policy-during-install"
    _stub(machine["bin"] / "apt-get",
          f'cat {machine["policy"]} > {seen} 2>/dev/null; echo "$@" >> {machine["calls"]}\n')
    assert _run(machine).returncode == 0
    assert "exit 101" in seen.read_text()
    assert not machine["policy"].exists()


@pytest.mark.parametrize("systemd_running", [True, False])
def test_packaged_orthanc_is_disabled_only_where_systemd_runs(machine, systemd_running):
    systemctl_calls = machine["root"] / "systemctl-calls"
    _stub(machine["bin"] / "systemctl", f'echo "$@" >> {systemctl_calls}\n')
    if systemd_running:
        machine["systemd"].mkdir()
    assert _run(machine).returncode == 0
    if systemd_running:
        assert "disable --now orthanc" in systemctl_calls.read_text()
    else:
        assert not systemctl_calls.exists()


def test_a_failing_apt_exits_1_with_the_tail_of_its_output(machine):
    _stub(machine["bin"] / "apt-get",
          'if [ "$1" = install ]; then echo "E: Unable to locate package restic"; exit 100; fi\n')
    machine["policy"].write_text("keep\n")
    result = _run(machine)
    assert result.returncode == 1
    assert "E: Unable to locate package restic" in result.stderr
    assert "apt-get install failed" in result.stderr
    assert machine["policy"].read_text() == "keep\n"


def test_a_failing_apt_still_removes_the_policy_it_made(machine):
    _stub(machine["bin"] / "apt-get", "exit 100\n")
    assert _run(machine).returncode == 1
    assert not machine["policy"].exists()


def test_nothing_missing_means_no_apt_call(machine):
    wanted = ["restic", "storescu", "Orthanc", "radosgw", "ceph-mon", "ceph-osd", "ceph", "curl", "openssl",
              "chromium", "pdftotext", "rsyslogd", "groff"]
    for name in wanted:
        _stub(machine["bin"] / name, "exit 0\n")
    for path in ("/usr/bin/time", "/usr/lib/postgresql/15/bin/pg_ctl", "/usr/share/doc/orthanc-postgresql/copyright"):
        if not Path(path).exists():
            pytest.skip(f"{path} is checked at its absolute path")
    result = _run(machine)
    assert result.returncode == 0, result.stderr
    assert not machine["calls"].exists()
    assert result.stderr == ""


def test_the_script_is_what_make_runs():
    makefile = (SCRIPT.parent.parent / "Makefile").read_text()
    assert "scripts/install-system-deps.sh" in makefile
    assert os.access(SCRIPT, os.X_OK)
