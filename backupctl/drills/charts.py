"""Hand-written SVG charts for drill reports: phase durations per drill, recovery time against the RTO.

Plain SVG text, inline in the HTML page: no library, no script, no network, prints as it shows. Every mark
carries a <title> so a manager hovering a bar or point reads the exact figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from html import escape
from typing import Any

PHASE_COLOURS = {
    "fetch": "#8c6bb1", "select": "#9ecae1", "restore": "#3182bd", "verify": "#31a354",
    "ingest": "#fd8d3c", "query": "#fdae6b", "cleanup": "#bdbdbd",
}
# drills recorded before the checks ran alongside the restore timed them as two phases of their own
LEGACY_PHASE_COLOURS = {"hash": "#31a354", "dicom": "#74c476"}
SERIES_COLOURS = ("#3182bd", "#e6550d", "#31a354", "#756bb1", "#636363", "#d6616b", "#8ca252", "#bd9e39")
FONT = 'font-family="system-ui, -apple-system, Segoe UI, sans-serif" font-size="12"'


def nice_ticks(maximum: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least `maximum` (1, 2 or 5 times a power of ten apart)."""
    if maximum <= 0:
        return [0.0, 1.0]
    raw = maximum / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    ticks = [0.0]
    while ticks[-1] < maximum - 1e-12:
        ticks.append(round(ticks[-1] + step, 10))
    return ticks


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".") if value % 1 else f"{value:.0f}"


def _empty(width: int, height: int, css_class: str, text: str) -> str:
    return (f'<svg class="chart {css_class}" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img"><text x="{width / 2}" y="{height / 2}" '
            f'text-anchor="middle" {FONT} fill="#666">{escape(text)}</text></svg>')


def phase_bars(drills: Sequence[dict[str, Any]], width: int = 860) -> str:
    """Stacked horizontal bars: one per drill, one segment per phase, seconds on the x axis."""
    if not drills:
        return _empty(width, 80, "phase-chart", "no drills in this period")
    label_w, right, top, row, bar_h = 200, 20, 44, 26, 16
    plot_w = width - label_w - right
    height = top + row * len(drills) + 30
    totals = [sum(p["seconds"] for p in d["phases"]) for d in drills]
    ticks = nice_ticks(max(totals) or 1.0)
    scale = plot_w / ticks[-1]
    out = [f'<svg class="chart phase-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="Phase durations per drill">',
           '<title>Phase durations per drill (seconds)</title>']
    legacy = [n for n in LEGACY_PHASE_COLOURS if any(p["name"] == n for d in drills for p in d["phases"])]
    out.append(_legend(list(PHASE_COLOURS) + legacy, label_w, 14, PHASE_COLOURS | LEGACY_PHASE_COLOURS))
    for t in ticks:
        x = label_w + t * scale
        out.append(f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height - 24}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{x:.1f}" y="{height - 10}" text-anchor="middle" {FONT} fill="#444">{_num(t)} s</text>')
    for i, (drill, total) in enumerate(zip(drills, totals, strict=True)):
        y = top + i * row
        label = f"#{drill['id']} {drill['name']}"
        mark = "" if drill.get("passed") else " ✗"
        out.append(f'<text x="{label_w - 8}" y="{y + bar_h - 3}" text-anchor="end" {FONT} '
                   f'fill="{"#222" if drill.get("passed") else "#b30000"}">{escape(label[:28] + mark)}</text>')
        x = float(label_w)
        for phase in drill["phases"]:
            w = phase["seconds"] * scale
            if w <= 0:
                continue
            name = phase["name"]
            tip = f"#{drill['id']} {drill['name']}: {name} {phase['seconds']:.2f} s"
            if phase.get("mb_per_second"):
                tip += f", {phase['mb_per_second']:.1f} MB/s"
            out.append(f'<rect class="bar phase-{escape(name)}" x="{x:.2f}" y="{y}" width="{max(w, 0.5):.2f}" '
                       f'height="{bar_h}" fill="{_phase_colour(name)}"><title>{escape(tip)}</title></rect>')
            x += w
        out.append(f'<text x="{x + 4:.1f}" y="{y + bar_h - 3}" {FONT} fill="#444">{total:.1f} s</text>')
    out.append("</svg>")
    return "".join(out)


def _phase_colour(name: str) -> str:
    return PHASE_COLOURS.get(name) or LEGACY_PHASE_COLOURS.get(name) or "#999"


def _legend(names: list[str], x0: int, y: int, colours: dict[str, str] | None = None) -> str:
    parts, x = [], x0
    for name in names:
        colour = (colours or PHASE_COLOURS).get(name, "#999")
        parts.append(f'<rect class="legend" x="{x}" y="{y - 9}" width="10" height="10" fill="{colour}"/>'
                     f'<text x="{x + 14}" y="{y}" {FONT} fill="#333">{escape(name)}</text>')
        x += 22 + 7 * len(name)
    return "".join(parts)


def _time(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def rto_lines(drills: Sequence[dict[str, Any]], width: int = 860, height: int = 300) -> str:
    """Recovery time of each drill over time (one line per drill definition) against its RTO (dashed).
    Hollow points are estimates (sampled drills); red points missed the RTO."""
    points = [d for d in drills if d.get("recovery_seconds") is not None]
    if not points:
        return _empty(width, 80, "rto-chart", "no drill in this period got as far as a recovery time")
    left, right, top, bottom = 64, 150, 30, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    value = {d["id"]: (d["estimated_full_seconds"] if d.get("rto_basis") == "estimate"
                       and d.get("estimated_full_seconds") is not None else d["recovery_seconds"]) / 60
             for d in points}
    y_max = nice_ticks(max(max(value.values()), max(d["rto_seconds"] / 60 for d in points)) * 1.1)
    ticks = y_max
    times = [_time(d["started"]) for d in points]
    t0, t1 = min(times), max(times)
    span = t1 - t0 or 1.0

    def px(d: dict[str, Any]) -> float:
        return left + (plot_w / 2 if t1 == t0 else (_time(d["started"]) - t0) / span * plot_w)

    def py(minutes: float) -> float:
        return top + plot_h - minutes / ticks[-1] * plot_h

    out = [f'<svg class="chart rto-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="Recovery time against the RTO">',
           '<title>Recovery time against the RTO (minutes)</title>']
    for t in ticks:
        y = py(t)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" {FONT} fill="#444">{_num(t)}</text>')
    out.append(f'<text x="14" y="{top + plot_h / 2}" transform="rotate(-90 14 {top + plot_h / 2})" '
               f'text-anchor="middle" {FONT} fill="#444">minutes</text>')
    for d in (points[0], points[-1]) if len(points) > 1 else points[:1]:
        out.append(f'<text x="{px(d):.1f}" y="{height - 14}" text-anchor="middle" {FONT} fill="#444">'
                   f'{escape(d["started"][:16].replace("T", " "))}</text>')
    names = sorted({d["name"] for d in points})
    colours = {n: SERIES_COLOURS[i % len(SERIES_COLOURS)] for i, n in enumerate(names)}
    for name in names:
        series = sorted((d for d in points if d["name"] == name), key=lambda d: d["started"])
        colour = colours[name]
        target = " ".join(f"{px(d):.1f},{py(d['rto_seconds'] / 60):.1f}" for d in series)
        if len(series) == 1:  # a lone target still shows as a line across the chart
            level = py(series[0]["rto_seconds"] / 60)
            target = f"{left},{level:.1f} {left + plot_w},{level:.1f}"
        out.append(f'<polyline class="rto-target" points="{target}" fill="none" stroke="{colour}" '
                   f'stroke-dasharray="6 4" stroke-width="1.5"><title>{escape(name)}: RTO target</title></polyline>')
        line = " ".join(f"{px(d):.1f},{py(value[d['id']]):.1f}" for d in series)
        out.append(f'<polyline class="rto-line" points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for d in series:
            missed = d.get("rto_met") is False
            estimate = d.get("rto_basis") == "estimate"
            tip = (f"#{d['id']} {name} {d['started'][:16].replace('T', ' ')}: {value[d['id']]:.2f} min"
                   f"{' (estimate)' if estimate else ''}, target {d['rto_seconds'] / 60:.2f} min"
                   f"{' - MISSED' if missed else ''}")
            fill = "#fff" if estimate else ("#b30000" if missed else colour)
            out.append(f'<circle class="rto-point{" missed" if missed else ""}" cx="{px(d):.1f}" '
                       f'cy="{py(value[d["id"]]):.1f}" r="4.5" fill="{fill}" '
                       f'stroke="{"#b30000" if missed else colour}" stroke-width="2"><title>{escape(tip)}</title>'
                       f'</circle>')
    for i, name in enumerate(names):
        y = top + 6 + i * 18
        out.append(f'<line x1="{left + plot_w + 14}" y1="{y}" x2="{left + plot_w + 34}" y2="{y}" '
                   f'stroke="{colours[name]}" stroke-width="2"/>'
                   f'<text x="{left + plot_w + 40}" y="{y + 4}" {FONT} fill="#333">{escape(name[:16])}</text>')
    y = top + 6 + len(names) * 18 + 6
    out.append(f'<line x1="{left + plot_w + 14}" y1="{y}" x2="{left + plot_w + 34}" y2="{y}" stroke="#666" '
               f'stroke-dasharray="6 4"/><text x="{left + plot_w + 40}" y="{y + 4}" {FONT} fill="#333">RTO target'
               f'</text>')
    out.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" stroke="#888"/>')
    out.append("</svg>")
    return "".join(out)
