"""The README's quick start runs as typed: its shell blocks, run by bash with only the machine's paths moved
into a temporary folder (and the editor step done by sed), reach a first backup, a restore and a locked S3
copy on the embedded server."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def quick_start_blocks() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Quick start"):readme.index("\n## ", readme.index("## Quick start") + 5)]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.S)
    start = next(i for i, b in enumerate(blocks) if "make install" in b)
    return blocks[start:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_readme_quick_start_runs_as_typed(tmp_path: Path) -> None:
    venv = Path(sys.executable).parent.parent
    port = free_port()
    script = "\n".join(quick_start_blocks())
    assert "make install" in script and "backupctl backup run pacs" in script and "target init" in script
    moved = {
        "make install": f"make -s -C {REPO} -o venv install VENV={venv} PREFIX={tmp_path}/usr",
        "/etc/backupctl": f"{tmp_path}/etc/backupctl",
        "/srv/dicom-archive": f"{tmp_path}/srv/dicom-archive",
        "/tmp/restore-trial": f"{tmp_path}/restore-trial",
        "9555": str(port),
    }
    for typed, here in moved.items():
        script = script.replace(typed, here)
    # the editor step: what an operator would type into the job file
    script = re.sub(r"^\$EDITOR (\S+).*$", rf'sed -i "s|\"/srv/dicom-archive\"|\"{tmp_path}/srv/dicom-archive\"|" \1',
                    script, flags=re.M)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "BACKUPCTL_"))}
    env["PATH"] = f"{tmp_path}/usr/bin:/usr/bin:/bin"    # backupctl only through what `make install` linked
    script = "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + script   # the trial server, also on failure
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert "ok — 1 job(s), 1 drill(s)" in done.stdout
    assert any((tmp_path / "restore-trial").rglob("*.dcm"))
    assert "created bucket 'pacs-trial'" in done.stdout
