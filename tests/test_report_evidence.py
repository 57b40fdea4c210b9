"""Recovery evidence: reports an auditor checks with openssl alone, charts readable for any RTO, RPO and a
lagging copy, a header and a verdict."""

from __future__ import annotations

import hashlib
import math
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from backupctl.actions.backup import run_backup
from backupctl.actions.drill import run_drill
from backupctl.actions.init import initialize
from backupctl.catalog import open_catalog
from backupctl.config import Config
from backupctl.drills.charts import POINT_R
from backupctl.drills.report import render_html, report_data
from backupctl.signing import generate_key
from backupctl.verify.status import study_coverage_now
from tests.drill_support import build_site
from tests.helpers import CONFIG_TEXT, assert_one_line_error, cli
from tests.report_support import record_drill

SVG = "{http://www.w3.org/2000/svg}"
# the auditor's command, exactly as docs/drills.md gives it
OPENSSL = "openssl pkeyutl -verify -pubin -inkey {key} -rawin -in {report} -sigfile {report}.sig"


def _openssl(folder: Path, key: str, report: str) -> subprocess.CompletedProcess[str]:
    argv = OPENSSL.format(key=key, report=report).split()
    return subprocess.run(argv, cwd=folder, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def reporting(tmp_path: Path) -> Config:
    """An installation (config, catalog, signing key) with three drills recorded."""
    config, _ = initialize(tmp_path / "site", CONFIG_TEXT + '\n[report]\nsite = "St. Example PACS"\n'
                                                           'owner = "IT operations"\n')
    with open_catalog(config.catalog_path) as catalog:
        record_drill(catalog, "weekly-s3", passed=True, seconds=42.0)
        record_drill(catalog, "weekly-s3", passed=False, seconds=55.0)
        record_drill(catalog, "daily-sample", passed=True, seconds=12.0, sampled=True, rto=300.0)
    return config


@pytest.mark.parametrize("fmt", ["html", "md", "json"])
def test_openssl_alone_verifies_a_report_and_refuses_an_edited_one(reporting: Config, tmp_path: Path,
                                                                    fmt: str) -> None:
    out = tmp_path / "out"
    report = out / f"drills.{fmt}"
    no_pdf = ["--no-pdf"] if fmt == "html" else []
    done = cli(reporting, "drill", "report", "--format", fmt, "-o", str(report), *no_pdf, check=True)
    keys = list(out.glob("report-key-*.pem"))
    assert len(keys) == 1 and (out / f"drills.{fmt}.sig").stat().st_size == 64    # a raw Ed25519 signature
    # the fingerprint shown is the one openssl computes from the exported key
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", str(keys[0]), "-outform", "DER"],
                         capture_output=True, check=True).stdout
    assert f"fingerprint {hashlib.sha256(der).hexdigest()}" in done.stdout

    verified = _openssl(out, keys[0].name, report.name)
    assert verified.returncode == 0 and "Signature Verified Successfully" in verified.stdout
    content = bytearray(report.read_bytes())
    content[content.index(b"weekly-s3") + 1] ^= 0x01
    report.write_bytes(bytes(content))
    refused = _openssl(out, keys[0].name, report.name)
    assert refused.returncode != 0 and "Verified Successfully" not in refused.stdout


def _backupctl_in(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """backupctl run from `folder`, with no configuration anywhere it could look."""
    env = {k: v for k, v in os.environ.items() if k != "BACKUPCTL_CONFIG"}
    return subprocess.run([sys.executable, "-m", "backupctl", *args], cwd=folder, capture_output=True, text=True,
                          timeout=120, env=env, stdin=subprocess.DEVNULL, check=False)


def test_verify_with_a_public_key_needs_no_configuration(reporting: Config, tmp_path: Path) -> None:
    out = tmp_path / "auditor"
    cli(reporting, "drill", "report", "--no-pdf", "-o", str(out / "drills.html"), check=True)
    key = next(out.glob("report-key-*.pem"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not list(empty.iterdir())
    ok = _backupctl_in(empty, "drill", "report", "--verify", str(out / "drills.html"), "--public-key", str(key))
    assert ok.returncode == 0, ok.stderr
    assert "signature OK" in ok.stdout and "detached .sig and embedded" in ok.stdout

    # the signature inside the page alone still verifies; a changed byte fails both ways
    (out / "drills.html.sig").rename(out / "kept.sig")
    alone = _backupctl_in(empty, "drill", "report", "--verify", str(out / "drills.html"), "--public-key", str(key))
    assert alone.returncode == 0 and "embedded" in alone.stdout
    (out / "kept.sig").rename(out / "drills.html.sig")
    content = bytearray((out / "drills.html").read_bytes())
    content[content.index(b"weekly-s3") + 1] ^= 0x01
    (out / "drills.html").write_bytes(bytes(content))
    assert_one_line_error(_backupctl_in(empty, "drill", "report", "--verify", str(out / "drills.html"),
                                        "--public-key", str(key)), 1, "drills.html.sig does not verify")
    # another installation's key is refused
    other = generate_key(tmp_path / "other" / "signing.key")
    (tmp_path / "other.pem").write_bytes(Path(str(other.path) + ".pub").read_bytes())
    cli(reporting, "drill", "report", "--no-pdf", "-o", str(out / "again.html"), check=True)
    assert_one_line_error(_backupctl_in(empty, "drill", "report", "--verify", str(out / "again.html"),
                                        "--public-key", str(tmp_path / "other.pem")), 1, "does not verify")
    # without a key and without a configuration: one line saying what is missing
    assert_one_line_error(_backupctl_in(empty, "drill", "report", "--verify", str(out / "again.html")), 2,
                          "no --public-key, and no configuration", "pass --public-key KEY.pem")


# charts ------------------------------------------------------------------------------------------------------

TARGETS = [("six-seconds", 6.0, [5.0, 9.0, 4.0]), ("one-minute", 60.0, [12.0, 30.0]),
           ("ten-minutes", 600.0, [30.0]), ("one-hour", 3600.0, [50.0, 40.0, 65.0]),
           ("eight-hours", 8 * 3600.0, [5.0, 3.0, 20.0, 2.0])]


def _float(el: ET.Element, name: str) -> float:
    return float(el.attrib[name])


def test_rto_chart_every_mark_inside_its_plot_and_distinguishable(tmp_path: Path) -> None:
    with open_catalog(tmp_path / "catalog.sqlite") as catalog:
        for name, rto, times in TARGETS:
            for i, seconds in enumerate(times):
                record_drill(catalog, name, passed=seconds <= rto, seconds=seconds, rto=rto,
                             started=f"2026-11-{10 + i:02d}T04:00:00.000000+00:00")
        data = report_data(catalog)
    html = render_html(data)
    svg = ET.fromstring(re.search(r'<svg class="chart rto-chart".*?</svg>', html, re.S)[0])
    panels = svg.findall(f"{SVG}g[@class='rto-panel']")
    assert [p.attrib["data-drill"] for p in panels] == sorted(n for n, _, _ in TARGETS)
    boxes = []
    y_of: dict[tuple[str, float], float] = {}
    for panel in panels:
        name = panel.attrib["data-drill"]
        rto, times = next((r, t) for n, r, t in TARGETS if n == name)
        plot = panel.find(f"{SVG}rect[@class='plot']")
        x0, y0 = _float(plot, "x"), _float(plot, "y")
        x1, y1 = x0 + _float(plot, "width"), y0 + _float(plot, "height")
        boxes.append((y0, y1))
        marks = [(_float(c, "cx"), _float(c, "cy")) for c in panel.iter(f"{SVG}circle")]
        marks += [(_float(p, "data-x"), _float(p, "data-y")) for p in panel.iter(f"{SVG}path")]
        assert len(marks) == len(times)
        for x, y in marks:
            assert x0 + POINT_R <= x <= x1 - POINT_R and y0 + POINT_R <= y <= y1 - POINT_R, (name, x, y)
        xs = sorted(x for x, _ in marks)
        assert all(b - a >= 2 * POINT_R + 2 for a, b in zip(xs, xs[1:], strict=False))   # no two overlap
        # 1 % and 100 % both read on every panel, far enough apart to tell
        ticks = {t.text: _float(t, "y") for t in panel.iter(f"{SVG}text") if t.attrib.get("class") == "tick"}
        assert {"1 %", "100 %"} <= ticks.keys() and ticks["1 %"] - ticks["100 %"] >= 24
        target = _float(panel.find(f"{SVG}line[@class='rto-target']"), "y1")
        assert abs(target - (ticks["100 %"] - 3.5)) < 0.2
        for (_x, y), seconds in zip(sorted(marks), times, strict=True):
            y_of[(name, seconds)] = y - y0
            above = y < target
            assert above == (seconds > rto), (name, seconds)        # a missed RTO is above the line
        # the panel's title carries the latest figure in words: nothing is only on hover
        title = "".join(next(t for t in panel.iter(f"{SVG}text") if t.attrib.get("class") == "panel-title").itertext())
        assert title.startswith(f"{name}: RTO ") and "% of the RTO" in title
    assert all(a[1] < b[0] for a, b in zip(boxes, boxes[1:], strict=False))               # panels apart
    # the same 5 s reads differently against a 6 s and an 8 h target: far apart on the shared scale
    assert y_of[("eight-hours", 5.0)] - y_of[("six-seconds", 5.0)] > 40
    # 2 s of 8 h (0.007 %) is below the scale's floor: drawn on it, as a triangle
    assert svg.find(f".//{SVG}path[@class='rto-point below']") is not None


def test_phase_chart_names_every_drill_in_full_and_says_every_figure(tmp_path: Path) -> None:
    long_name = "daily-worm-sample-from-the-s3-object-lock-copy"
    with open_catalog(tmp_path / "catalog.sqlite") as catalog:
        record_drill(catalog, long_name, passed=True, seconds=30.0)
        data = report_data(catalog)
    html = render_html(data)
    svg = re.search(r'<svg class="chart phase-chart".*?</svg>', html, re.S)[0]
    assert long_name in svg and "Hover" not in html
    # restore (18 s) is wide enough to carry its figure; select (0.4 s) is named on the drill's line
    assert ">18.0</text>" in svg and "select 0.40 s" in svg
    widths = [float(w) for w in re.findall(r'<svg class="chart[^"]*"[^>]*width="(\d+)"', html)]
    assert widths and max(widths) <= 700


# RPO, lag, header, verdict ------------------------------------------------------------------------------------


def test_rpo_ages_against_the_target_and_a_lagging_copy_warns(tmp_path: Path) -> None:
    started = "2026-11-20T06:00:00.000000+00:00"
    with open_catalog(tmp_path / "catalog.sqlite") as catalog:
        fresh = record_drill(catalog, "staging-latest", passed=True, seconds=10.0, rpo=24 * 3600.0, started=started,
                             snapshot_time="2026-11-20T02:00:00.123456789Z",
                             job_newest_time="2026-11-20T02:00:00.123456789Z",
                             copy_newest_time="2026-11-20T02:00:00.123456789Z", copy="staging")
        lagging = record_drill(catalog, "s3-latest", passed=True, seconds=10.0, rpo=24 * 3600.0, started=started,
                               snapshot_time="2026-11-17T02:00:00Z", job_newest_time="2026-11-20T02:00:00Z",
                               copy_newest_time="2026-11-17T02:00:00Z", copy="s3")
        data = report_data(catalog, site="St. Example", owner="IT operations")
    by_id = {d["id"]: d for d in data["drills"]}
    assert by_id[fresh]["restored_age_seconds"] == pytest.approx(4 * 3600, abs=1)
    assert by_id[fresh]["rpo_met"] is True and by_id[fresh]["warnings"] == []
    late = by_id[lagging]
    assert late["restored_age_seconds"] == pytest.approx(76 * 3600, abs=1) and late["rpo_met"] is False
    assert late["job_newest_age_seconds"] == pytest.approx(4 * 3600, abs=1) and late["job_rpo_met"] is True
    assert late["copy_lag_seconds"] == pytest.approx(72 * 3600) and "copy 's3' lagged" in late["warnings"][0]
    assert data["summary"]["rpo_met"] == 1 and data["summary"]["rpo_missed"] == 1
    assert data["verdict"].startswith("1 of 2 drill(s) did not") and f"s3-latest #{lagging} (RPO missed)" in \
        data["verdict"] and "1 warning(s)" in data["verdict"]
    html = render_html(data)
    assert "St. Example" in html and "IT operations" in html and "copy &#x27;s3&#x27; lagged" in html
    assert html.index('class="verdict bad"') < html.index("<h2>")


def test_job_recovery_point_now_in_staging_and_each_copy(tmp_path: Path) -> None:
    from backupctl.catalog import snapshots as snapshot_rows

    with open_catalog(tmp_path / "catalog.sqlite") as catalog:
        for sid, when in (("aa" * 32, "2026-11-17T02:00:00.5Z"), ("bb" * 32, "2026-11-20T03:00:00.5+01:00")):
            snapshot_rows.record_snapshot(catalog, snapshot_id=sid, short_id=sid[:8], job="pacs", time=when,
                                          run_id=None, size=1, files=1, tags=[], paths=["/archive"])
        snapshot_rows.record_replicas(catalog, ["aa" * 32], "s3", "bucket/prefix")
        record_drill(catalog, "weekly", passed=True, seconds=10.0)
        data = report_data(catalog, jobs={"pacs": (24 * 3600.0, ["s3", "offline"])})
    [job] = data["jobs"]
    assert job["snapshot_id"] == "bb" * 32 and job["rpo_met"] is False          # days old by now
    s3, offline = job["copies"]
    assert s3["snapshot_id"] == "aa" * 32 and s3["behind_seconds"] == 72 * 3600 and s3["rpo_met"] is False
    assert offline["snapshot_id"] is None
    assert any("copy 's3' of job pacs" in w for w in job["warnings"])
    assert "copy 'offline' of job pacs holds no snapshot of it yet" in job["warnings"]
    assert "RPO missed now: job pacs's newest snapshot is" in data["verdict"] and "2 warning(s)" in data["verdict"]
    html = render_html(data)
    assert 'class="verdict bad"' in html and "3.0 d behind" in html


def test_verdict_when_every_drill_held() -> None:
    from backupctl.drills.report import verdict_line

    good = {"id": 1, "name": "a", "status": "success", "passed": True, "rto_met": True, "rpo_met": True,
            "checks": [], "warnings": []}
    assert verdict_line([good, {**good, "id": 2}]) == "All 2 drill(s) passed and met their RTO and RPO."
    assert verdict_line([]).startswith("No drill ran")


@pytest.mark.slow
def test_a_drill_from_a_copy_that_lags_the_job_is_a_warning_in_the_report(tmp_path: Path) -> None:
    site = build_site(tmp_path)
    site.archive.joinpath("late.txt").write_text("written after the copy was made\n")
    newer = run_backup(site.config, "pacs", replicate=False)       # staging moves on, the disk does not
    config = site.define("disk-latest", 'job = "pacs"\ncopy_from = "offline"\nscope = "sample:1"\n'
                                        "rto_minutes = 30\nrpo_hours = 24\n")
    result = run_drill(config, "disk-latest", seed=3)
    assert result.passed and result.snapshot_id == site.backup.snapshot_id
    assert result.job_newest_snapshot_id == newer.snapshot_id
    with open_catalog(config.catalog_path) as catalog:
        data = report_data(catalog)
    drill = data["drills"][-1]
    assert drill["warnings"] and "copy 'offline' lagged the job's newest snapshot" in drill["warnings"][0]
    assert drill["rpo_met"] is True and math.isclose(drill["rpo_seconds"], 24 * 3600)
    assert "1 warning(s)" in data["verdict"]
    shown = cli(config, "drill", "show", str(result.run_id), check=True).stdout
    assert "recovery point: restored data" in shown and "warning: copy 'offline' lagged" in shown


# PDF and the printed page -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_pdf_beside_the_html_has_the_verdict_on_page_one_and_verifies(reporting: Config, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cli(reporting, "drill", "report", "--pdf", "-o", str(out / "drills.html"), check=True)
    pdf = out / "drills.pdf"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    first = subprocess.run(["pdftotext", "-f", "1", "-l", "1", str(pdf), "-"], capture_output=True, text=True,
                           check=True).stdout
    assert "1 of 3 drill(s) did not pass or meet their targets" in " ".join(first.split())
    assert "St. Example PACS" in first and "IT operations" in first
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True).stdout
    width, height = map(float, re.search(r"Page size:\s+([\d.]+) x ([\d.]+) pts", info).groups())
    assert width <= 612 and height <= 842            # Letter or A4, portrait
    key = next(out.glob("report-key-*.pem"))
    assert _openssl(out, key.name, "drills.pdf").returncode == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    checked = _backupctl_in(empty, "drill", "report", "--verify", str(pdf), "--public-key", str(key))
    assert checked.returncode == 0 and "pdf, detached .sig" in checked.stdout


@pytest.mark.slow
def test_printed_page_holds_every_table_and_chart(reporting: Config, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with open_catalog(reporting.catalog_path) as catalog:
        for name, rto, times in TARGETS:
            for seconds in times:
                record_drill(catalog, f"{name}-with-a-long-drill-name-as-sites-write-them", passed=seconds <= rto,
                             seconds=seconds, rto=rto)
    page_file = tmp_path / "drills.html"
    cli(reporting, "drill", "report", "--no-pdf", "-o", str(page_file), check=True)
    printable = 700        # A4 (210 mm) and Letter (216 mm) less 12 mm margins, in CSS px
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": printable, "height": 1000})
            page.emulate_media(media="print")
            page.goto(page_file.as_uri())
            widest = page.evaluate("Math.max(...[...document.querySelectorAll('table, svg.chart')]"
                                   ".map(e => e.getBoundingClientRect().right))")
            scroll = page.evaluate("document.documentElement.scrollWidth")
        finally:
            browser.close()
    assert widest <= printable and scroll <= printable


# mailed -------------------------------------------------------------------------------------------------------


def test_mailed_report_arrives_with_files_openssl_verifies(reporting: Config, tmp_path: Path) -> None:
    import email
    from email import policy

    from backupctl.config import load_config
    from backupctl.progress import NullProgress
    from backupctl.scheduler.daemon import wanted_schedules
    from backupctl.scheduler.kinds import run_chain
    from tests.scheduler.test_sched_notify import SmtpSink

    sink = SmtpSink()
    try:
        with reporting.path.open("a") as fh:
            fh.write(f'\n[smtp]\nhost = "127.0.0.1"\nport = {sink.port}\nsecurity = "none"\n'
                     'sender = "backupctl@hospital.example"\n')
        text = reporting.path.read_text().replace('owner = "IT operations"\n', 'owner = "IT operations"\n'
                                                  'schedule = "0 7 * * 1"\nemail_to = ["cio@hospital.example"]\n'
                                                  "pdf = false\n")
        reporting.path.write_text(text)
        config = load_config(reporting.path)
        assert wanted_schedules(config)["report:drills"] == ("report", "drills", "0 7 * * 1", "UTC")
        chain = run_chain(config, "report", "drills", NullProgress())        # what the schedule runs
        assert chain.status == "success", chain.as_dict()
        assert chain.steps[0].figures["mailed_to"] == 1
        by_hand = cli(config, "drill", "report", "--mail", "--to", "auditor@example.org", "--no-pdf", check=True)
        assert "mailed through smtp://127.0.0.1" in by_hand.stdout
    finally:
        sink.close()
    scheduled, manual = sink.messages
    assert "cio@hospital.example" in scheduled["rcpt"][0] and "auditor@example.org" in manual["rcpt"][0]
    msg = email.message_from_string(scheduled["data"], policy=policy.default)
    assert msg["Subject"].startswith("Restore drill report, St. Example PACS: 1 of 3 drill(s) did not pass")
    body = msg.get_body(preferencelist=("plain",)).get_content()
    assert "Verdict: 1 of 3 drill(s)" in body and "openssl pkeyutl -verify -pubin -inkey report-key-" in body
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    names = []
    for part in msg.iter_attachments():
        (inbox / part.get_filename()).write_bytes(part.get_payload(decode=True))   # saved as a mail client does
        names.append(part.get_filename())
    report = next(n for n in names if n.endswith(".html"))
    key = next(n for n in names if n.endswith(".pem"))
    assert f"{report}.sig" in names
    assert _openssl(inbox, key, report).returncode == 0          # as received, checked with openssl alone


# coverage -----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_study_coverage_turns_status_metrics_and_report_red_past_the_bound(tmp_path: Path) -> None:
    from backupctl.cli.scheduler import status_report
    from backupctl.config import load_config
    from backupctl.metrics import render

    site = build_site(tmp_path)
    config = site.define("one-study", 'job = "pacs"\nscope = "sample:1"\nrto_minutes = 30\n')
    result = run_drill(config, "one-study", seed=5)
    assert result.passed
    verified = result.studies[0].study_uid
    with open_catalog(config.catalog_path) as catalog:
        fresh = report_data(catalog, coverage=study_coverage_now(config, catalog))
    assert fresh["coverage"]["ok"] and fresh["coverage"]["total"] == 6
    assert fresh["coverage"]["never_verified"] == 5                     # the drill verified one of six
    assert 'backupctl_coverage_ok{what="studies"} 1.0' in render(config).decode()
    assert not any("coverage" in p for p in status_report(config)["problems"])

    with open_catalog(config.catalog_path) as catalog, catalog.transaction() as tx:   # verified 40 days ago
        tx.execute("UPDATE study_reads SET last_read=? WHERE study_uid=?", ("2026-01-01T00:00:00+00:00", verified))
    with open_catalog(config.catalog_path) as catalog:
        stale = report_data(catalog, coverage=study_coverage_now(config, catalog))
    assert not stale["coverage"]["ok"] and stale["coverage"]["oldest"] == verified
    assert "Coverage is red" in stale["verdict"] and "(bound 31 days)" in stale["verdict"]
    assert 'class="verdict bad"' in render_html(stale) and "Verification coverage" in render_html(stale)
    assert 'backupctl_coverage_ok{what="studies"} 0.0' in render(config).decode()
    problems = status_report(config)["problems"]
    assert any(p.startswith("study coverage: 6 studies") for p in problems)

    with config.path.open("a") as fh:                                   # a wider bound: green again
        fh.write("\n[verify]\nmax_unverified_days = 3650\n")
    wider = load_config(config.path)
    assert not any("coverage" in p for p in status_report(wider)["problems"])


def test_drill_key_exports_the_pem_whose_fingerprint_openssl_computes(reporting: Config, tmp_path: Path) -> None:
    shown = cli(reporting, "drill", "key", check=True)
    assert shown.stdout.startswith("-----BEGIN PUBLIC KEY-----") and shown.stdout.rstrip().endswith("-----")
    pem = tmp_path / "auditor.pem"
    cli(reporting, "drill", "key", "-o", str(pem), check=True)
    assert pem.read_text() == shown.stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-in", str(pem), "-outform", "DER"], capture_output=True,
                         check=True).stdout
    assert f"SHA-256 fingerprint {hashlib.sha256(der).hexdigest()}" in shown.stderr
    # the exported key checks a report made afterwards, with openssl
    cli(reporting, "drill", "report", "--no-pdf", "-o", str(tmp_path / "r.html"), check=True)
    assert _openssl(tmp_path, "auditor.pem", "r.html").returncode == 0
