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
from html import escape
from typing import Any

from backupctl import __version__
from backupctl.catalog import Catalog
from backupctl.catalog import drills as drill_rows
from backupctl.catalog.db import utcnow
from backupctl.drills.charts import PHASE_COLOURS, phase_bars, rto_lines
from backupctl.drills.model import ERROR, duration_text
from backupctl.errors import SignatureInvalid, UsageError
from backupctl.signing import SigningKey, VerifyKey, signature_document, verify_document
from backupctl.units import human_bytes, zoned_time

FORMAT = "backupctl-drill-report/1"
FORMATS = ("html", "json", "md")
TRAILER_PREFIX = b"\n<!-- backupctl-signature "
TRAILER_SUFFIX = b" -->\n"
JSON_HEAD = b'{"report":'
JSON_MIDDLE = b',"signature":{'    # the signature's own "signature" member holds a string, never "{"
PROBLEMS_SHOWN = 10
BAR_CHART_DRILLS = 30


def report_data(catalog: Catalog, *, since: str | None = None, key_id: str = "") -> dict[str, Any]:
    """The facts every form of the report shows: each drill with phases, checks and problems, oldest first."""
    drills = [drill_rows.with_details(catalog, d) for d in reversed(drill_rows.list_drills(catalog, since=since))]
    finished = [d for d in drills if d["status"] != "running"]
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
        "latest": {name: {"id": d["id"], "started": d["started"], "passed": bool(d.get("passed")),
                          "rto_met": d.get("rto_met")} for name, d in sorted(latest.items())},
    }
    return {"format": FORMAT, "generated": utcnow(), "host": socket.gethostname(), "backupctl": __version__,
            "since": since, "key_id": key_id, "summary": summary, "drills": finished}


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
    return f"{word} (target {minutes(d['rto_seconds'])})"


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
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:70rem;color:#222;
padding:0 1rem;line-height:1.4}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ddd}
.meta{color:#555;font-size:.9rem}
.cards{display:flex;gap:1rem;flex-wrap:wrap;margin:1rem 0}
.card{border:1px solid #ddd;border-radius:6px;padding:.6rem 1rem;min-width:8rem}
.card b{display:block;font-size:1.5rem}
.ok{color:#1a7f37}.bad{color:#b30000}.muted{color:#777}
table{border-collapse:collapse;width:100%;font-size:.85rem}
th,td{border-bottom:1px solid #e5e5e5;padding:.3rem .4rem;text-align:left;vertical-align:top}
th{background:#f6f6f6}td.num{text-align:right;white-space:nowrap}
code{font-size:.8rem;word-break:break-all}
.failure{border-left:4px solid #b30000;padding:.2rem 1rem;margin:1rem 0;background:#fff7f7}
svg.chart{max-width:100%;height:auto;display:block;margin:.5rem 0}
footer{margin-top:3rem;color:#666;font-size:.8rem}
@media print{body{margin:0}.failure{break-inside:avoid}}
"""


def render_html(data: dict[str, Any]) -> str:
    drills = data["drills"]
    s = data["summary"]
    rto_known = s["rto_met"] + s["rto_missed"]
    since = f" since {escape(data['since'])}" if data.get("since") else ""
    parts = [
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f'<meta name="generated" content="{escape(data["generated"])}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Restore drills — {escape(data['host'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>Restore drills — {escape(data['host'])}</h1>",
        f'<p class="meta">Generated {escape(data["generated"][:19].replace("T", " "))} UTC by backupctl '
        f"{escape(data['backupctl'])}; {s['drills']} drill(s){since}.</p>",
        '<div class="cards">',
        f'<div class="card">drills<b>{s["drills"]}</b></div>',
        f'<div class="card">passed<b class="ok">{s["passed"]}</b></div>',
        f'<div class="card">failed<b class="{"bad" if s["failed"] else "muted"}">{s["failed"]}</b></div>',
        f'<div class="card">RTO met<b class="{"ok" if not s["rto_missed"] else "bad"}">'
        f'{s["rto_met"]} / {rto_known}</b></div>',
        f'<div class="card">interrupted<b class="muted">{s["interrupted"]}</b></div>' if s["interrupted"] else "",
        "</div>",
    ]
    if s["latest"]:
        parts.append("<p>Latest result per drill: " + "; ".join(
            f'<b>{escape(name)}</b> <span class="{"ok" if v["passed"] else "bad"}">'
            f'{"passed" if v["passed"] else "failed"}</span> (#{v["id"]}, {escape(v["started"][:10])})'
            for name, v in s["latest"].items()) + ".</p>")
    parts += [
        "<h2>Recovery time against the RTO</h2>",
        "<p class=\"meta\">Each line is one drill definition; the dashed line is its recovery time objective. "
        "Filled points were measured (the whole snapshot restored); hollow points are estimates extrapolated "
        "from a sample's measured throughput; red points missed the RTO.</p>",
        rto_lines(drills),
        "<h2>Where the time goes</h2>",
        f"<p class=\"meta\">Seconds per phase, last {min(len(drills), BAR_CHART_DRILLS)} drill(s). "
        "Hover a bar for its figure.</p>",
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
    parts.append(
        f"<footer>Format {FORMAT}. Signed with Ed25519 key <code>{escape(data['key_id'])}</code>: the signature "
        "and the SHA-256 of this page are in the comment at its end; check them with "
        "<code>backupctl drill report --verify FILE</code>. Times are UTC; durations come from a monotonic clock."
        "</footer></body></html>")
    return "\n".join(parts)


def _drill_table(drills: list[dict[str, Any]]) -> str:
    if not drills:
        return '<p class="muted">No drills in this period.</p>'
    head = ("#", "started (UTC)", "drill", "copy", "snapshot", "scope", "depth", "result", "recovery",
            "RTO", "first study", "files", "restored", "restore rate")
    rows = ["<table class=\"drills\"><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"]
    for d in reversed(drills):
        ok = d.get("passed")
        cells = [
            f'<td class="num">{d["id"]}</td>', f'<td class="num">{escape(zoned_time(d["started"], local=False))}</td>',
            f"<td>{escape(d['name'])}</td>", f"<td>{escape(d['copy'])}</td>",
            f"<td><code>{escape((d.get('snapshot_id') or '-')[:8])}</code></td>",
            f"<td>{escape(d['scope'])}</td>", f"<td>{escape(d['depth'])}</td>",
            f'<td class="{"ok" if ok else "bad"}">{verdict(d)}</td>',
            f'<td class="num">{escape(recovery_text(d))}</td>',
            f'<td class="{"ok" if d.get("rto_met") else "bad" if d.get("rto_met") is False else "muted"}">'
            f"{escape(rto_text(d))}</td>",
            f'<td class="num">{minutes(d.get("first_study_seconds"))}</td>',
            f'<td class="num">{d.get("files") or 0}</td>', f'<td class="num">{human_bytes(d.get("bytes"))}</td>',
            f'<td class="num">{restore_rate(d)}</td>',
        ]
        rows.append(f'<tr class="{"passed" if ok else "failed"}">' + "".join(cells) + "</tr>")
    rows.append("</tbody></table>")
    return "".join(rows)


def _failure_html(d: dict[str, Any]) -> str:
    started = escape(zoned_time(d["started"], local=False))
    parts = [f'<div class="failure"><h3>#{d["id"]} {escape(d["name"])} — {started}'
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
    lines = [
        f"# Restore drills — {data['host']}", "",
        f"Generated: {data['generated']} by backupctl {data['backupctl']}"
        + (f", drills since {data['since']}" if data.get("since") else ""), "",
        f"**{s['drills']}** drill(s): **{s['passed']}** passed, **{s['failed']}** failed, "
        f"{s['interrupted']} interrupted; "
        f"RTO met {s['rto_met']} of {s['rto_met'] + s['rto_missed']}.", "",
        "| # | started (UTC) | drill | copy | snapshot | scope | result | recovery | RTO | first study | files | "
        "phases (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for d in reversed(data["drills"]):
        phases = ", ".join(f"{p['name']} {p['seconds']:.2f}" for p in d["phases"] if p["status"] == "ok")
        lines.append(
            f"| {d['id']} | {zoned_time(d['started'], local=False)} | {_md(d['name'])} | {_md(d['copy'])} | "
            f"{(d.get('snapshot_id') or '-')[:8]} | {d['scope']} | {verdict(d)} | {_md(recovery_text(d))} | "
            f"{_md(rto_text(d))} | {minutes(d.get('first_study_seconds'))} | {d.get('files') or 0} | {phases} |")
    lines += ["", "## Failures explained", ""]
    failed = [d for d in reversed(data["drills"]) if not d.get("passed")]
    if not failed:
        lines.append("No drill failed in this period.")
    for d in failed:
        lines.append(f"### #{d['id']} {_md(d['name'])} — {zoned_time(d['started'], local=False)}")
        lines.append("")
        lines += [f"- {_md(line)}" for line in explain(d)]
        lines += [f"  - `{p['path'] or '-'}`: {p['kind']} ({_md(p['detail'])})" for p in errors_of(d)[:PROBLEMS_SHOWN]]
        lines.append("")
    lines += ["", f"Phase colours in the HTML form: {', '.join(PHASE_COLOURS)}. Signed with Ed25519 key "
              f"`{data['key_id']}`; check with `backupctl drill report --verify FILE`."]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
