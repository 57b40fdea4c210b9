"""Drill reports for managers and auditors: HTML (self-contained, inline SVG charts), JSON and Markdown.

Every report is signed with the installation's Ed25519 key (the one that signs manifests):

* HTML and Markdown end with one line `<!-- backupctl-signature {...} -->` holding the SHA-256 of every
  byte before that line and the Ed25519 signature over them (an HTML comment hides it in both);
* JSON is `{"report":<canonical JSON>,"signature":{...}}`, the signature over the report's exact bytes.

`verify_report` checks a file with the public key alone, so an auditor can tell that nobody changed a
figure after the report was made; any changed byte fails.
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any

from backupctl import __version__
from backupctl.catalog import Catalog
from backupctl.catalog import drills as drill_rows
from backupctl.catalog import snapshots as snapshot_rows
from backupctl.catalog.db import utcnow
from backupctl.drills.charts import PHASE_COLOURS, phase_bars, rto_panels
from backupctl.drills.model import ERROR, duration_text, hours_text
from backupctl.drills.select import snapshot_datetime
from backupctl.errors import SignatureInvalid, UsageError
from backupctl.signing import SigningKey, VerifyKey, fingerprint, signature_document, verify_document
from backupctl.units import human_bytes
from backupctl.verify.status import coverage_text

FORMAT = "backupctl-drill-report/1"
FORMATS = ("html", "json", "md")
TRAILER_PREFIX = b"\n<!-- backupctl-signature "
TRAILER_SUFFIX = b" -->\n"
JSON_HEAD = b'{"report":'
JSON_MIDDLE = b',"signature":{'    # the signature's own "signature" member holds a string, never "{"
PROBLEMS_SHOWN = 10
BAR_CHART_DRILLS = 30


def report_data(catalog: Catalog, *, since: str | None = None, key_id: str = "",
                key: VerifyKey | None = None, site: str | None = None, owner: str | None = None,
                coverage: dict[str, Any] | None = None,
                jobs: dict[str, tuple[float | None, list[str]]] | None = None) -> dict[str, Any]:
    """The facts every form of the report shows: a header, each drill with phases, checks, problems and its
    recovery point, oldest first, a summary and a one-line verdict; with `coverage` (the studies' coverage,
    `verify.status.study_coverage_now`) also how long the least recently verified study went unverified; with
    `jobs` (name -> (RPO seconds or None, target names)) each job's recovery point now, in staging and in each
    copy."""
    if key is not None:
        key_id = key.key_id
    drills = [drill_rows.with_details(catalog, d) for d in reversed(drill_rows.list_drills(catalog, since=since))]
    finished = [d for d in drills if d["status"] != "running"]
    for d in finished:
        d.update(recovery_point(d))
    latest: dict[str, dict[str, Any]] = {}
    for d in finished:
        latest[d["name"]] = d
    summary = {
        "drills": len(finished),
        "passed": sum(1 for d in finished if d.get("passed")),
        "failed": sum(1 for d in finished if not d.get("passed") and d["status"] != "interrupted"),
        "interrupted": sum(1 for d in finished if d["status"] == "interrupted"),
        "rto_met": sum(1 for d in finished if d.get("rto_met") is True),
        "rto_missed": sum(1 for d in finished if d.get("rto_met") is False),
        "rpo_met": sum(1 for d in finished if d.get("rpo_met") is True),
        "rpo_missed": sum(1 for d in finished if d.get("rpo_met") is False),
        "warnings": sum(len(d["warnings"]) for d in finished),
        "latest": {name: {"id": d["id"], "started": d["started"], "passed": bool(d.get("passed")),
                          "rto_met": d.get("rto_met"), "rpo_met": d.get("rpo_met")}
                   for name, d in sorted(latest.items())},
    }
    generated = utcnow()
    period = {"from": since or (finished[0]["started"] if finished else None), "to": generated}
    points = [job_point(catalog, name, rpo, targets, generated)
              for name, (rpo, targets) in sorted((jobs or {}).items())]
    summary["warnings"] += sum(len(j["warnings"]) for j in points)
    return {"format": FORMAT, "generated": generated, "host": socket.gethostname(), "backupctl": __version__,
            "site": site, "owner": owner, "period": period,
            "since": since, "key_id": key_id, "key_fingerprint": fingerprint(key) if key else None,
            "summary": summary, "verdict": verdict_line(finished, coverage, points), "coverage": coverage,
            "jobs": points, "drills": finished}


def _when(text: str) -> datetime:
    try:
        return snapshot_datetime(text)          # restic's text: nanoseconds, 'Z'
    except ValueError:
        when = datetime.fromisoformat(text)
        return when if when.tzinfo else when.replace(tzinfo=UTC)


def _age(at: str, of: str | None) -> float | None:
    return None if of is None else max(0.0, (_when(at) - _when(of)).total_seconds())


def recovery_point(d: dict[str, Any]) -> dict[str, Any]:
    """How old the data was at the drill, against the RPO target: the restored snapshot's age (held to the
    target when the rule is 'latest': other rules pick older snapshots on purpose) and the age of the job's
    newest snapshot (always held). A copy whose newest snapshot is older than the job's newest one lagged:
    a warning, whatever the drill's result."""
    restored_age = _age(d["started"], d.get("snapshot_time"))
    newest_age = _age(d["started"], d.get("job_newest_snapshot_time"))
    rpo = d.get("rpo_seconds")
    held: list[bool] = []
    restored_met = newest_met = None
    if rpo is not None:
        if restored_age is not None and d.get("snapshot_rule") == "latest":
            restored_met = restored_age <= rpo
            held.append(restored_met)
        if newest_age is not None:
            newest_met = newest_age <= rpo
            held.append(newest_met)
    warnings = []
    copy_newest, job_newest = d.get("copy_newest_snapshot_time"), d.get("job_newest_snapshot_time")
    lag = None
    if copy_newest and job_newest and _when(copy_newest) < _when(job_newest):
        lag = (_when(job_newest) - _when(copy_newest)).total_seconds()
        warnings.append(f"copy '{d['copy']}' lagged the job's newest snapshot by {hours_text(lag)}: its newest "
                        f"was of {_short_time(copy_newest)}, the job's {(d.get('job_newest_snapshot_id') or '')[:8]} "
                        f"of {_short_time(job_newest)}")
    return {"restored_age_seconds": restored_age, "job_newest_age_seconds": newest_age,
            "restored_rpo_met": restored_met, "job_rpo_met": newest_met,
            "rpo_met": all(held) if held else None, "copy_lag_seconds": lag, "warnings": warnings}


def job_point(catalog: Catalog, job: str, rpo: float | None, targets: list[str], now: str) -> dict[str, Any]:
    """A job's recovery point when the report is made: its newest snapshot's age, and per copy the age of the
    newest snapshot it holds (what a restore from that copy alone would get back), each against the RPO."""
    newest = max(snapshot_rows.list_snapshots(catalog, job=job, replicas=False), key=lambda r: _when(r["time"]),
                 default=None)
    age = _age(now, newest["time"]) if newest else None
    held: dict[str, dict[str, Any]] = {}
    for row in snapshot_rows.newest_in_copies(catalog, job):
        if row["target"] not in held or _when(row["time"]) > _when(held[row["target"]]["time"]):
            held[row["target"]] = row
    copies, warnings = [], []
    for target in targets:
        row = held.get(target)
        copy_age = _age(now, row["time"]) if row else None
        behind = (_when(newest["time"]) - _when(row["time"])).total_seconds() if row and newest else None
        met = None if rpo is None or copy_age is None else copy_age <= rpo
        copies.append({"target": target, "snapshot_id": row["id"] if row else None, "age_seconds": copy_age,
                       "behind_seconds": behind, "rpo_met": met})
        if row is None and newest is not None:
            warnings.append(f"copy '{target}' of job {job} holds no snapshot of it yet")
        elif met is False:
            warnings.append(f"copy '{target}' of job {job}: its newest snapshot is {hours_text(copy_age)} old "
                            f"(RPO {hours_text(rpo)}); restoring from it alone would lose that much")
    return {"job": job, "snapshot_id": newest["id"] if newest else None, "age_seconds": age, "rpo_seconds": rpo,
            "rpo_met": None if rpo is None or age is None else age <= rpo, "copies": copies, "warnings": warnings}


def _short_time(text: str) -> str:
    return _when(text).strftime("%Y-%m-%d %H:%M")


def shortfalls(d: dict[str, Any]) -> list[str]:
    """What a drill did not hold, in a few words each."""
    out = []
    if d["status"] == "interrupted":
        out.append("interrupted")
    else:
        failed = [c["name"] for c in d["checks"] if c["status"] == "fail" and c["name"] != "rto"]
        if failed or (not d.get("passed") and d.get("rto_met") is not False):
            out.append("failed" + (f": {', '.join(failed)}" if failed else ""))
    if d.get("rto_met") is False:
        out.append("RTO missed")
    if d.get("rpo_met") is False:
        out.append("RPO missed")
    return out


def verdict_line(drills: list[dict[str, Any]], coverage: dict[str, Any] | None = None,
                 jobs: list[dict[str, Any]] | None = None) -> str:
    """One sentence: every drill held its RTO and RPO, or how many did not and which; then a job whose newest
    snapshot is older than its RPO now, stale coverage, and the number of warnings."""
    text = _drills_verdict(drills)
    late = [j for j in jobs or [] if j["rpo_met"] is False]
    if late:
        text += " RPO missed now: " + "; ".join(
            f"job {j['job']}'s newest snapshot is {hours_text(j['age_seconds'])} old "
            f"(RPO {hours_text(j['rpo_seconds'])})" for j in late) + "."
    if coverage is not None and not coverage["ok"]:
        text += f" Coverage is red: {coverage_text(coverage)}."
    warned = sum(len(d["warnings"]) for d in drills) + sum(len(j["warnings"]) for j in jobs or [])
    return text + (f" {warned} warning(s): see below." if warned else "")


def _drills_verdict(drills: list[dict[str, Any]]) -> str:
    if not drills:
        return "No drill ran in this period: nothing proves that the archive can be restored."
    bad = [(d, shortfalls(d)) for d in drills]
    bad = [(d, why) for d, why in bad if why]
    if not bad:
        return (f"All {len(drills)} drill(s) passed and met their RTO"
                f"{' and RPO' if any(d.get('rpo_met') is not None for d in drills) else ''}.")
    which = "; ".join(f"{d['name']} #{d['id']} ({', '.join(why)})" for d, why in reversed(bad[-5:]))
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    return f"{len(bad)} of {len(drills)} drill(s) did not pass or meet their targets: {which}{more}."


# signing ---------------------------------------------------------------------------------------------------


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def signed_report(data: dict[str, Any], fmt: str, key: SigningKey) -> bytes:
    """The report in `fmt`, signed."""
    if fmt == "json":
        body = _canonical(data)
        doc = signature_document(key, body)
        return JSON_HEAD + body + JSON_MIDDLE[:-1] + _canonical(doc) + b"}\n"
    if fmt == "html":
        body = render_html(data).encode()
    elif fmt == "md":
        body = render_markdown(data).encode()
    else:
        raise UsageError(f"unknown report format '{fmt}'", hint=f"use one of {', '.join(FORMATS)}")
    doc = signature_document(key, body)
    return body + TRAILER_PREFIX + _canonical(doc) + TRAILER_SUFFIX


@dataclass
class VerifiedReport:
    format: str
    sha256: str
    key_id: str
    generated: str | None
    drills: int | None


_TRAILER = re.compile(rb"\n<!-- backupctl-signature (\{[^\n]*\}) -->\n\Z")


def split_signed(content: bytes) -> tuple[str, bytes, dict[str, Any]]:
    """(format, signed bytes, signature document) of a signed report; raises SignatureInvalid."""
    if content.startswith(JSON_HEAD):
        cut = content.rfind(JSON_MIDDLE)
        if cut < 0 or not content.endswith(b"}\n"):
            raise SignatureInvalid("report: not a signed JSON report (no signature member)")
        body, sig = content[len(JSON_HEAD):cut], content[cut + len(JSON_MIDDLE) - 1:-2]
        fmt = "json"
    else:
        m = _TRAILER.search(content)
        if not m:
            raise SignatureInvalid("report: no backupctl signature line at its end",
                                   hint="only reports written by `backupctl drill report` carry one")
        body, sig = content[:m.start()], m[1]
        fmt = "html" if body.lstrip().lower().startswith(b"<!doctype html") else "md"
    try:
        doc = json.loads(sig)
    except ValueError:
        raise SignatureInvalid("report: its signature is not readable JSON") from None
    if not isinstance(doc, dict):
        raise SignatureInvalid("report: its signature is malformed")
    return fmt, body, doc


def verify_report(content: bytes, trusted: VerifyKey) -> VerifiedReport:
    """Check a signed report: its SHA-256 and its Ed25519 signature by the trusted key."""
    import hashlib

    fmt, body, doc = split_signed(content)
    digest = hashlib.sha256(body).hexdigest()
    if doc.get("sha256") != digest:
        raise SignatureInvalid(f"report: its content changed after signing (SHA-256 {digest[:16]}…, signed "
                               f"{str(doc.get('sha256'))[:16]}…)")
    verify_document(trusted, body, doc, "report")
    generated, drills = None, None
    if fmt == "json":
        try:
            data = json.loads(body)
            generated, drills = data.get("generated"), len(data.get("drills", []))
        except ValueError:
            raise SignatureInvalid("report: signed, but its JSON does not parse") from None
    else:
        m = re.search(rb'name="generated" content="([^"]*)"', body) or re.search(rb"Generated: ([^ \n]+)", body)
        generated = m[1].decode() if m else None
    return VerifiedReport(fmt, digest, str(doc.get("key_id")), generated, drills)


# words -------------------------------------------------------------------------------------------------------


minutes = duration_text


def verdict(d: dict[str, Any]) -> str:
    if d["status"] == "interrupted":
        return "interrupted"
    return "passed" if d.get("passed") else "FAILED"


def recovery_text(d: dict[str, Any]) -> str:
    if d.get("rto_basis") == "estimate" and d.get("estimated_full_seconds") is not None:
        return f"{minutes(d['estimated_full_seconds'])} (estimate; sample took {minutes(d['recovery_seconds'])})"
    return minutes(d.get("recovery_seconds"))


def rto_text(d: dict[str, Any]) -> str:
    met = d.get("rto_met")
    word = "met" if met else "missed" if met is False else "not measured"
    return f"{word} (target {hours_text(d['rto_seconds'])})"


def rpo_text(d: dict[str, Any]) -> str:
    """The restored data's age against the RPO, in words."""
    age = d.get("restored_age_seconds")
    if age is None:
        return "-"
    text = f"{hours_text(age)} old"
    rpo = d.get("rpo_seconds")
    if rpo is None:
        return text + " (no RPO set)"
    met = d.get("rpo_met")
    word = "met" if met else "missed" if met is False else "not held"
    return f"{text}, {word} (target {hours_text(rpo)})"


def restore_rate(d: dict[str, Any]) -> str:
    phase = next((p for p in d["phases"] if p["name"] == "restore"), None)
    return f"{human_bytes(phase['mb_per_second'] * 1e6)}/s" if phase and phase.get("mb_per_second") else "-"


def explain(d: dict[str, Any]) -> list[str]:
    """Why a drill failed, in sentences: each failed check, then the run's error."""
    lines = []
    for c in d["checks"]:
        if c["status"] == "fail":
            lines.append(f"{c['name']}: {c['detail']}")
    if d.get("error") and not lines:
        lines.append(d["error"])
    return lines


def errors_of(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in d["problems"] if p["severity"] == ERROR]


# HTML --------------------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5rem auto;max-width:700px;color:#222;
padding:0 1rem;line-height:1.35;font-size:14px}
h1{font-size:1.45rem;margin:0 0 .2rem}h2{font-size:1.1rem;margin-top:1.6rem;border-bottom:1px solid #ddd}
h3{font-size:1rem;margin:.4rem 0}
.meta{color:#555;font-size:.85rem}
dl.header{display:grid;grid-template-columns:max-content 1fr;gap:.1rem .8rem;margin:.4rem 0;font-size:.9rem}
dl.header dt{color:#555}dl.header dd{margin:0}
.verdict{font-size:1.05rem;font-weight:600;padding:.5rem .8rem;border-radius:4px;margin:.8rem 0}
.verdict.good{background:#eef8f0;border-left:5px solid #1a7f37}
.verdict.bad{background:#fff1f1;border-left:5px solid #b30000}
.cards{display:flex;gap:.6rem;flex-wrap:wrap;margin:.8rem 0}
.card{border:1px solid #ddd;border-radius:6px;padding:.4rem .7rem;min-width:6rem;font-size:.85rem}
.card b{display:block;font-size:1.3rem}
.ok{color:#1a7f37}.bad{color:#b30000}.warn{color:#8a5a00}.muted{color:#777}
table{border-collapse:collapse;width:100%;font-size:.75rem;table-layout:fixed}
th,td{border-bottom:1px solid #e5e5e5;padding:.25rem .3rem;text-align:left;vertical-align:top;
overflow-wrap:anywhere}
th{background:#f6f6f6}td.num{text-align:right}
code{font-size:.75rem;overflow-wrap:anywhere}
.failure{border-left:4px solid #b30000;padding:.2rem .8rem;margin:.8rem 0;background:#fff7f7}
.warning{border-left:4px solid #c98a00;padding:.3rem .8rem;margin:.5rem 0;background:#fffaf0}
svg.chart{max-width:100%;height:auto;display:block;margin:.4rem 0}
footer{margin-top:2rem;color:#555;font-size:.75rem}
@page{margin:12mm}
@media print{body{margin:0;padding:0;max-width:none}.failure,.warning,svg.chart,tr{break-inside:avoid}
h2{break-after:avoid}}
"""


def render_html(data: dict[str, Any]) -> str:
    drills = data["drills"]
    s = data["summary"]
    rto_known = s["rto_met"] + s["rto_missed"]
    rpo_known = s["rpo_met"] + s["rpo_missed"]
    title = "Restore drills" + (f" — {data['site']}" if data.get("site") else f" — {data['host']}")
    good = (bool(drills) and not any(shortfalls(d) for d in drills)
            and (data.get("coverage") or {}).get("ok", True)
            and not any(j["rpo_met"] is False for j in data.get("jobs") or []))
    parts = [
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f'<meta name="generated" content="{escape(data["generated"])}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{escape(title)}</h1>",
        _header_html(data),
        f'<p class="verdict {"good" if good else "bad"}">{escape(data["verdict"])}</p>',
        '<div class="cards">',
        f'<div class="card">drills<b>{s["drills"]}</b></div>',
        f'<div class="card">passed<b class="ok">{s["passed"]}</b></div>',
        f'<div class="card">failed<b class="{"bad" if s["failed"] else "muted"}">{s["failed"]}</b></div>',
        f'<div class="card">RTO met<b class="{"ok" if not s["rto_missed"] else "bad"}">'
        f'{s["rto_met"]} / {rto_known}</b></div>',
        f'<div class="card">RPO met<b class="{"ok" if not s["rpo_missed"] else "bad"}">'
        f'{s["rpo_met"]} / {rpo_known}</b></div>',
        f'<div class="card">warnings<b class="{"warn" if s["warnings"] else "muted"}">{s["warnings"]}</b></div>',
        f'<div class="card">interrupted<b class="muted">{s["interrupted"]}</b></div>' if s["interrupted"] else "",
        "</div>",
    ]
    if s["latest"]:
        parts.append("<p>Latest result per drill: " + "; ".join(
            f'<b>{escape(name)}</b> <span class="{"ok" if v["passed"] else "bad"}">'
            f'{"passed" if v["passed"] else "failed"}</span> (#{v["id"]}, {escape(v["started"][:10])})'
            for name, v in s["latest"].items()) + ".</p>")
    warned = [d for d in reversed(drills) if d["warnings"]]
    job_warnings = [w for j in data.get("jobs") or [] for w in j["warnings"]]
    if warned or job_warnings:
        parts.append("<h2>Warnings</h2>")
        parts += [f'<p class="warning">Now: {escape(w)}</p>' for w in job_warnings]
        parts += [f'<p class="warning">#{d["id"]} {escape(d["name"])} '
                  f'({escape(d["started"][:16].replace("T", " "))}): {escape(w)}</p>'
                  for d in warned for w in d["warnings"]]
    parts += [
        "<h2>Recovery time against each drill's RTO</h2>",
        '<p class="meta">One panel per drill, its drills in order: recovery time as a share of that drill\'s own '
        "RTO, on a log scale (each grid line ten times the one below); the dashed line is the RTO. A point above "
        "it missed the RTO. Sampled drills are held to their estimate for the whole snapshot. Every figure is in "
        "the table below.</p>",
        rto_panels(drills),
        "<h2>Recovery point</h2>",
        _jobs_table(data.get("jobs") or []),
        _rpo_table(drills),
        _coverage_html(data.get("coverage")),
        "<h2>Where the time goes</h2>",
        f'<p class="meta">Seconds per phase, last {min(len(drills), BAR_CHART_DRILLS)} drill(s).</p>',
        phase_bars(drills[-BAR_CHART_DRILLS:]),
        "<h2>Drills</h2>",
        _drill_table(drills),
    ]
    failed = [d for d in reversed(drills) if not d.get("passed")]   # newest first
    parts.append("<h2>Failures explained</h2>")
    if not failed:
        parts.append('<p class="ok">No drill failed in this period.</p>')
    for d in failed:
        parts.append(_failure_html(d))
    parts.append(_footer_html(data) + "</footer></body></html>")
    return "\n".join(parts)


def _header_html(data: dict[str, Any]) -> str:
    period = data.get("period") or {}
    start = _day(period.get("from")) if period.get("from") else "the first drill recorded"
    rows = [("Site", data.get("site") or "not set ([report] site)"),
            ("Owner", data.get("owner") or "not set ([report] owner)"),
            ("Period", f"{start} to {_day(period.get('to'))}"),
            ("Generated", f"{data['generated'][:19].replace('T', ' ')} UTC on {data['host']}"),
            ("Software", f"backupctl {data['backupctl']}")]
    return '<dl class="header">' + "".join(f"<dt>{k}</dt><dd>{escape(v)}</dd>" for k, v in rows) + "</dl>"


def _day(text: str | None) -> str:
    return "-" if not text else _when(text).strftime("%Y-%m-%d %H:%M UTC")


def _footer_html(data: dict[str, Any]) -> str:
    key_id = escape(data["key_id"])
    fp = data.get("key_fingerprint")
    return (
        f"<footer>Format {FORMAT}. Signed with Ed25519 key <code>{key_id}</code>"
        + (f" (SHA-256 fingerprint of the public key <code>{escape(fp)}</code>)" if fp else "") + ". "
        "Check this file without backupctl, with its signature file <code>REPORT.sig</code> and the public key "
        f"<code>report-key-{key_id}.pem</code> beside it: <code>openssl pkeyutl -verify -pubin -inkey "
        f"report-key-{key_id}.pem -rawin -in REPORT -sigfile REPORT.sig</code>; or with "
        "<code>backupctl drill report --verify REPORT --public-key KEY.pem</code> (the SHA-256 of this page and "
        "a signature are also in the comment at its end). Times are UTC; durations come from a monotonic clock.")


def _jobs_table(jobs: list[dict[str, Any]]) -> str:
    """Each job's recovery point as the report is made: in staging and in each of its copies."""
    if not jobs:
        return ""
    head = ("job", "newest snapshot, age", "RPO", "copies: newest snapshot held, age (behind the newest)")
    rows = ['<p class="meta">Now: how old each job\'s newest snapshot is, and the newest one each copy holds (what '
            "a restore from that copy alone gets back).</p>",
            '<table class="jobs-rpo"><thead><tr>' + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"]
    for j in jobs:
        css = "ok" if j["rpo_met"] else "bad" if j["rpo_met"] is False else "muted"
        state = "no target" if j["rpo_seconds"] is None else "met" if j["rpo_met"] else "missed" \
            if j["rpo_met"] is False else "no snapshot"
        copies = "<br>".join(
            f"{escape(c['target'])}: " + (f"<code>{escape(c['snapshot_id'][:8])}</code>, "
                                          + _age_cell(c["age_seconds"], c["rpo_met"])
                                          + (f" ({hours_text(c['behind_seconds'])} behind)" if c["behind_seconds"]
                                             else "") if c["snapshot_id"] else '<span class="bad">none</span>')
            for c in j["copies"]) or '<span class="muted">no copies</span>'
        cells = [escape(j["job"]),
                 (f"<code>{escape(j['snapshot_id'][:8])}</code>, " + _age_cell(j["age_seconds"], j["rpo_met"]))
                 if j["snapshot_id"] else '<span class="bad">none</span>',
                 f'<span class="{css}">{state}</span>' + (f" ({hours_text(j['rpo_seconds'])})" if j["rpo_seconds"]
                                                          else ""),
                 copies]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    rows.append("</tbody></table>")
    return "".join(rows)


def _rpo_table(drills: list[dict[str, Any]]) -> str:
    """Per drill definition, its latest drill: the restored data's age and the job's newest snapshot's age."""
    latest: dict[str, dict[str, Any]] = {}
    for d in drills:
        latest[d["name"]] = d
    if not latest:
        return '<p class="muted">No drills in this period.</p>'
    head = ("drill (latest)", "job", "restored snapshot", "its age at the drill", "job's newest snapshot, age",
            "RPO")
    rows = ['<p class="meta">How old the restored data was when each drill ran, and how old the job\'s newest '
            "snapshot was then. The restored age is held to the RPO when the drill restores the latest snapshot; "
            "the job's newest snapshot always is.</p>",
            '<table class="rpo"><thead><tr>' + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"]
    for name, d in sorted(latest.items()):
        rpo = d.get("rpo_seconds")
        met = d.get("rpo_met")
        state = ("no target" if rpo is None else "met" if met else "missed" if met is False else "not measured")
        css = "ok" if met else "bad" if met is False else "muted"
        newest = d.get("job_newest_snapshot_id")
        cells = [f"#{d['id']} {escape(name)}", escape(d["job"]),
                 f"<code>{escape((d.get('snapshot_id') or '-')[:8])}</code> ({escape(d['snapshot_rule'])}, "
                 f"{escape(d['copy'])})",
                 _age_cell(d.get("restored_age_seconds"), d.get("restored_rpo_met")),
                 (f"<code>{escape(newest[:8])}</code>, " if newest else "")
                 + _age_cell(d.get("job_newest_age_seconds"), d.get("job_rpo_met")),
                 f'<span class="{css}">{state}</span>' + (f" (target {hours_text(rpo)})" if rpo else "")]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    rows.append("</tbody></table>")
    return "".join(rows)


def _coverage_html(coverage: dict[str, Any] | None) -> str:
    if coverage is None:
        return ""
    css = "ok" if coverage["ok"] else "bad"
    oldest = f" The oldest: <code>{escape(coverage['oldest'])}</code>." if coverage.get("oldest") else ""
    return ("<h2>Verification coverage</h2>"
            f'<p><span class="{css}">{"within the bound" if coverage["ok"] else "RED"}</span>: '
            f"{escape(coverage_text(coverage))}.{oldest}</p>"
            '<p class="meta">A study counts as verified when a drill or <code>verify restore</code> restored it and '
            "every file matched its manifest and parsed as DICOM; the bound is <code>[verify] "
            "max_unverified_days</code>.</p>")


def _age_cell(age: float | None, met: bool | None) -> str:
    css = "ok" if met else "bad" if met is False else ""
    return f'<span class="{css}">{hours_text(age)}</span>' if css else hours_text(age)


def _drill_table(drills: list[dict[str, Any]]) -> str:
    if not drills:
        return '<p class="muted">No drills in this period.</p>'
    head = (("#", 5), ("started (UTC)", 13), ("drill, copy, snapshot", 22), ("result", 9), ("recovery, RTO", 17),
            ("data age, RPO", 15), ("first study", 8), ("restored", 11))
    rows = ['<table class="drills"><colgroup>' + "".join(f'<col style="width:{w}%">' for _, w in head)
            + "</colgroup><thead><tr>" + "".join(f"<th>{h}</th>" for h, _ in head) + "</tr></thead><tbody>"]
    for d in reversed(drills):
        ok = d.get("passed")
        rto_css = "ok" if d.get("rto_met") else "bad" if d.get("rto_met") is False else "muted"
        rpo_css = "ok" if d.get("rpo_met") else "bad" if d.get("rpo_met") is False else "muted"
        cells = [
            f'<td class="num">{d["id"]}</td>', f'<td>{escape(d["started"][:16].replace("T", " "))}</td>',
            f"<td>{escape(d['name'])}<br><span class=\"muted\">{escape(d['copy'])}, "
            f"<code>{escape((d.get('snapshot_id') or '-')[:8])}</code>, {escape(d['scope'])}, "
            f"{escape(d['depth'])}</span></td>",
            f'<td class="{"ok" if ok else "bad"}">{verdict(d)}'
            + ('<br><span class="warn">warning</span>' if d["warnings"] else "") + "</td>",
            f'<td>{escape(recovery_text(d))}<br><span class="{rto_css}">{escape(rto_text(d))}</span></td>',
            f'<td><span class="{rpo_css}">{escape(rpo_text(d))}</span></td>',
            f'<td class="num">{minutes(d.get("first_study_seconds"))}</td>',
            f'<td>{d.get("files") or 0} files, {human_bytes(d.get("bytes"))}<br>'
            f'<span class="muted">{restore_rate(d)}</span></td>',
        ]
        rows.append(f'<tr class="{"passed" if ok else "failed"}">' + "".join(cells) + "</tr>")
    rows.append("</tbody></table>")
    return "".join(rows)


def _failure_html(d: dict[str, Any]) -> str:
    parts = [f'<div class="failure"><h3>#{d["id"]} {escape(d["name"])} — {escape(d["started"][:19].replace("T", " "))}'
             f" ({escape(d['copy'])}, snapshot {escape((d.get('snapshot_id') or '-')[:8])})</h3><ul>"]
    parts += [f"<li>{escape(line)}</li>" for line in explain(d)]
    parts.append("</ul>")
    errors = errors_of(d)
    if errors:
        parts.append("<table><thead><tr><th>check</th><th>problem</th><th>file</th><th>detail</th></tr></thead><tbody>")
        for p in errors[:PROBLEMS_SHOWN]:
            parts.append(f"<tr><td>{escape(p['check'])}</td><td>{escape(p['kind'])}</td>"
                         f"<td><code>{escape(p['path'] or '-')}</code></td><td>{escape(p['detail'])}</td></tr>")
        parts.append("</tbody></table>")
        if len(errors) > PROBLEMS_SHOWN:
            parts.append(f"<p class=\"muted\">… and {len(errors) - PROBLEMS_SHOWN} more "
                         f"(<code>backupctl drill show {d['id']}</code>).</p>")
    parts.append(f'<p class="muted">Seed {d["seed"]}: <code>backupctl drill run {escape(d["name"])} --seed '
                 f'{d["seed"]}</code> repeats its choices.</p></div>')
    return "".join(parts)


# Markdown ----------------------------------------------------------------------------------------------------


def render_markdown(data: dict[str, Any]) -> str:
    s = data["summary"]
    period = data.get("period") or {}
    lines = [
        f"# Restore drills — {data.get('site') or data['host']}", "",
        f"Site: {data.get('site') or '-'}; owner: {data.get('owner') or '-'}; period: "
        f"{_day(period.get('from')) if period.get('from') else '-'} to {_day(period.get('to'))}", "",
        f"Generated: {data['generated']} on {data['host']} by backupctl {data['backupctl']}"
        + (f", drills since {data['since']}" if data.get("since") else ""), "",
        f"**Verdict: {data['verdict']}**", "",
        f"**{s['drills']}** drill(s): **{s['passed']}** passed, **{s['failed']}** failed, "
        f"{s['interrupted']} interrupted; "
        f"RTO met {s['rto_met']} of {s['rto_met'] + s['rto_missed']}; "
        f"RPO met {s['rpo_met']} of {s['rpo_met'] + s['rpo_missed']}; {s['warnings']} warning(s).", "",
    ]
    if data.get("coverage"):
        lines += [f"Verification coverage ({'ok' if data['coverage']['ok'] else 'RED'}): "
                  f"{coverage_text(data['coverage'])}.", ""]
    for j in data.get("jobs") or []:
        copies = ", ".join(f"{c['target']} {hours_text(c['age_seconds'])}" for c in j["copies"]) or "none"
        rpo = f"RPO {hours_text(j['rpo_seconds'])}" if j["rpo_seconds"] else "no RPO"
        lines.append(f"- Job {_md(j['job'])} now: newest snapshot {hours_text(j['age_seconds'])} old ({rpo}); "
                     f"newest in each copy: {_md(copies)}")
    if data.get("jobs"):
        lines.append("")
    warned = [d for d in reversed(data["drills"]) if d["warnings"]]
    job_warnings = [w for j in data.get("jobs") or [] for w in j["warnings"]]
    if warned or job_warnings:
        lines += ["## Warnings", ""]
        lines += [f"- Now: {_md(w)}" for w in job_warnings]
        lines += [f"- #{d['id']} {_md(d['name'])}: {_md(w)}" for d in warned for w in d["warnings"]]
        lines.append("")
    lines += [
        "| # | started (UTC) | drill | copy | snapshot | scope | result | recovery | RTO | data age, RPO | "
        "first study | files | phases (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in reversed(data["drills"]):
        phases = ", ".join(f"{p['name']} {p['seconds']:.2f}" for p in d["phases"] if p["status"] == "ok")
        lines.append(
            f"| {d['id']} | {d['started'][:19].replace('T', ' ')} | {_md(d['name'])} | {_md(d['copy'])} | "
            f"{(d.get('snapshot_id') or '-')[:8]} | {d['scope']} | {verdict(d)} | {_md(recovery_text(d))} | "
            f"{_md(rto_text(d))} | {_md(rpo_text(d))} | {minutes(d.get('first_study_seconds'))} | "
            f"{d.get('files') or 0} | {phases} |")
    lines += ["", "## Failures explained", ""]
    failed = [d for d in reversed(data["drills"]) if not d.get("passed")]
    if not failed:
        lines.append("No drill failed in this period.")
    for d in failed:
        lines.append(f"### #{d['id']} {_md(d['name'])} — {d['started'][:19].replace('T', ' ')}")
        lines.append("")
        lines += [f"- {_md(line)}" for line in explain(d)]
        lines += [f"  - `{p['path'] or '-'}`: {p['kind']} ({_md(p['detail'])})" for p in errors_of(d)[:PROBLEMS_SHOWN]]
        lines.append("")
    lines += ["", f"Phase colours in the HTML form: {', '.join(PHASE_COLOURS)}. Signed with Ed25519 key "
              f"`{data['key_id']}`; check with `backupctl drill report --verify FILE --public-key KEY.pem`, or "
              "with openssl and the `.sig` beside the file."]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
