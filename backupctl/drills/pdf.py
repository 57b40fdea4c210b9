"""The report's PDF, printed from its HTML by Debian's chromium, headless.

The page's own CSS lays it out for paper (700 px of content fit A4 and Letter within 12 mm margins), so the
PDF is what the HTML shows. Chromium gets a profile folder of its own for each print: two prints at once
(a scheduled report while a manager runs one) would otherwise contend for one profile's lock.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from backupctl import process
from backupctl.errors import ReportError

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
PRINT_TIMEOUT = 120.0


def find_chromium() -> str | None:
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def wants_pdf(setting: bool | None) -> bool:
    """`[report] pdf`: true prints (and fails without chromium), false never, unset when chromium is there."""
    return setting if setting is not None else find_chromium() is not None


def print_pdf(html: Path, pdf: Path, *, chromium: str | None = None, timeout: float = PRINT_TIMEOUT) -> Path:
    """Print `html` to `pdf` (written to a temporary name, renamed when complete)."""
    browser = chromium or find_chromium()
    if browser is None:
        raise ReportError("cannot print the report to PDF: chromium is not installed",
                               hint="apt-get install chromium, or set [report] pdf = false")
    pdf.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{pdf.name}.", suffix=".tmp", dir=pdf.parent)
    os.close(fd)
    try:
        with tempfile.TemporaryDirectory(prefix="backupctl-chromium-") as profile:
            argv = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-pdf-header-footer",
                    "--disable-background-networking", "--no-first-run", f"--user-data-dir={profile}",
                    f"--print-to-pdf={tmp}", html.absolute().as_uri()]
            code, tail = _run(argv, timeout)
        if code != 0 or not Path(tmp).read_bytes()[:5] == b"%PDF-":
            raise ReportError(f"chromium could not print {html.name} to PDF (exit {code})"
                                   + (f": {tail}" if tail else ""))
        os.chmod(tmp, 0o644)   # as readable as the HTML beside it (mkstemp made it 0600)
        os.replace(tmp, pdf)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return pdf


def _run(argv: list[str], timeout: float) -> tuple[int, str]:
    """Run chromium in a process group of its own; on timeout the whole group (its renderers too) is killed."""
    done = process.run(argv, timeout=timeout, kill_grace=0, text=False, kill_leftovers=True)
    if done.timed_out:
        raise ReportError(f"chromium did not print the report within {timeout:.0f} s")
    err = done.stderr or b""
    lines = [ln for ln in err.decode(errors="replace").splitlines() if ln.strip() and "dbus" not in ln.lower()]
    return done.returncode or 0, lines[-1][:200] if lines else ""
