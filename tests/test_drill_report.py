"""Drill reports: signed HTML/JSON/Markdown, verification, and the HTML page in a real headless Chromium."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from backupctl.actions.drill import run_drill
from backupctl.catalog import drills as drill_rows
from backupctl.catalog import open_catalog
from backupctl.drills.report import report_data, signed_report, verify_report
from backupctl.errors import SignatureInvalid, UsageError
from backupctl.signing import generate_key
from tests.drill_support import Site
from tests.helpers import assert_one_line_error, cli
from tests.report_support import record_drill

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
def recorded(tmp_path: Path) -> tuple[dict, object]:
    key = generate_key(tmp_path / "signing.key")
    with open_catalog(tmp_path / "catalog.sqlite") as catalog:
        record_drill(catalog, "weekly-s3", passed=True, seconds=42.0, legacy=True)
        record_drill(catalog, "weekly-s3", passed=False, seconds=55.0)
        record_drill(catalog, "daily-sample", passed=True, seconds=12.0, sampled=True, rto=300.0)
        data = report_data(catalog, key_id=key.key_id)
    return data, key


@pytest.mark.parametrize("fmt", ["html", "json", "md"])
def test_report_signature_verifies_and_any_changed_byte_fails(recorded: tuple[dict, object], fmt: str) -> None:
    data, key = recorded
    content = signed_report(data, fmt, key)
    checked = verify_report(content, key.verify_key)
    assert checked.format == fmt and checked.key_id == key.key_id
    # one changed byte in the body, one in the signature line: both refused
    body_at = content.index(b"weekly-s3") + 3
    signature_at = content.rindex(b'"signature":"') + 20
    for at in (body_at, signature_at, len(content) // 2):
        tampered = bytearray(content)
        tampered[at] ^= 0x01
        with pytest.raises(SignatureInvalid):
            verify_report(bytes(tampered), key.verify_key)
    with pytest.raises(SignatureInvalid):
        verify_report(content[:-3], key.verify_key)


def test_report_signed_by_another_key_is_refused(recorded: tuple[dict, object], tmp_path: Path) -> None:
    data, key = recorded
    other = generate_key(tmp_path / "other.key")
    with pytest.raises(SignatureInvalid, match="another key"):
        verify_report(signed_report(data, "html", other), key.verify_key)


def test_report_json_carries_the_facts(recorded: tuple[dict, object]) -> None:
    data, key = recorded
    report = json.loads(signed_report(data, "json", key))["report"]
    assert report["summary"]["drills"] == 3 and report["summary"]["failed"] == 1
    assert report["summary"]["rto_met"] == 3 and report["summary"]["rto_missed"] == 0
    failed = [d for d in report["drills"] if not d["passed"]][0]
    assert failed["problems"][0]["path"] == "/archive/P1/S1/img<1>.dcm"
    assert {p["name"] for p in failed["phases"]} >= {"restore", "verify"}
    legacy = report["drills"][0]                       # recorded with a phase per check: still reported
    assert {p["name"] for p in legacy["phases"]} >= {"restore", "hash", "dicom"}
    sampled = [d for d in report["drills"] if d["rto_basis"] == "estimate"][0]
    assert sampled["estimated_full_seconds"] == 120.0


def test_report_html_is_self_contained_and_explains_failures(recorded: tuple[dict, object]) -> None:
    data, key = recorded
    html = signed_report(data, "html", key).decode()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)   # nothing to fetch
    assert "<script" not in html
    assert html.count('class="bar phase-restore"') == 3
    assert html.count('class="bar phase-verify"') == 2 and html.count('class="bar phase-hash"') == 1
    assert html.count('class="rto-point') == 3
    assert "img&lt;1&gt;.dcm" in html and "img<1>" not in html         # file names are escaped
    assert "hash: 1 of 40 file(s) failed: hash-mismatch" in html


def test_report_since_filters(tmp_path: Path) -> None:
    with open_catalog(tmp_path / "catalog.sqlite") as catalog:
        record_drill(catalog, "old", passed=True, seconds=1.0)
        assert len(report_data(catalog, since="2999-01-01")["drills"]) == 0
        assert len(report_data(catalog, since="2000-01-01")["drills"]) == 1


def test_unknown_report_format_is_refused(recorded: tuple[dict, object]) -> None:
    data, key = recorded
    with pytest.raises(UsageError):
        signed_report(data, "pdf", key)


@pytest.mark.slow
def test_report_html_opens_in_chromium_with_its_charts_and_verifies(site: Site, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    config = site.define("report-ok", 'job = "pacs"\nscope = "sample:1"\nrto_minutes = 30\n')
    config = site.define("report-tight", 'job = "pacs"\nscope = "sample:1"\nrto_minutes = 0.001\n')
    run_drill(config, "report-ok", seed=1)
    missed = run_drill(config, "report-tight", seed=1)
    assert not missed.passed
    page_file = tmp_path / "drills.html"
    cli(config, "drill", "report", "-o", str(page_file), check=True)
    with open_catalog(config.catalog_path) as catalog:
        drills = [drill_rows.with_details(catalog, d) for d in drill_rows.list_drills(catalog)
                  if d["status"] != "running"]

    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(page_file.as_uri())
            shot = page.screenshot(path=str(tmp_path / "drills.png"), full_page=True)
            bar_rows = page.locator("svg.phase-chart rect.bar").count()
            points = page.locator("svg.rto-chart circle.rto-point").count()
            missed_points = page.locator("svg.rto-chart circle.rto-point.missed").count()
            targets = page.locator("svg.rto-chart line.rto-target").count()   # one RTO line per drill panel
            table_rows = page.locator("table.drills tbody tr").count()
            chart_box = page.locator("svg.rto-chart").bounding_box()
            failure_text = page.locator(".failure", has_text="report-tight").first.inner_text()
            first_failure = page.locator(".failure").first.inner_text()
        finally:
            browser.close()
    assert errors == []
    assert requests == [page_file.as_uri()]           # self-contained: the page itself and nothing else
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 10_000
    assert table_rows == len(drills)
    assert bar_rows == sum(1 for d in drills[:30] for p in d["phases"] if p["seconds"] > 0)   # one per phase
    assert points == sum(1 for d in drills if d["recovery_seconds"] is not None)
    assert missed_points >= 1 and targets >= 2
    assert chart_box and chart_box["width"] > 400 and chart_box["height"] > 150
    assert "rto: recovery" in failure_text and "target 0.1 s" in failure_text
    assert first_failure.startswith(f"#{missed.run_id} report-tight")     # newest failure first

    assert cli(config, "drill", "report", "--verify", str(page_file), check=True).stdout.count("signature OK") == 1
    content = bytearray(page_file.read_bytes())
    content[content.index(b"report-ok") + 2] ^= 0x20
    page_file.write_bytes(bytes(content))
    assert_one_line_error(cli(config, "drill", "report", "--verify", str(page_file)), 1, "changed after signing")
