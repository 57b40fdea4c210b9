"""Hand-written SVG charts for drill reports: each drill's recovery time as a share of its own RTO, and
where the time goes.

Plain SVG text, inline in the HTML page: no library, no script, no network. The charts are drawn for a
printed page (700 px wide fits A4 and Letter with 12 mm margins) and everything a reader needs is written
on them or in the report's table: a <title> on a mark only repeats what the page already says.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

from backupctl.drills.model import duration_text, hours_text

PHASE_COLOURS = {
    "fetch": "#8c6bb1", "select": "#9ecae1", "restore": "#3182bd", "verify": "#31a354",
    "ingest": "#fd8d3c", "query": "#fdae6b", "cleanup": "#bdbdbd",
}
# drills recorded before the checks ran alongside the restore timed them as two phases of their own
LEGACY_PHASE_COLOURS = {"hash": "#31a354", "dicom": "#74c476"}
LIGHT_PHASES = {"select", "query", "cleanup"}   # dark figures on these pale segments
FONT = 'font-family="system-ui, -apple-system, Segoe UI, sans-serif" font-size="12"'
SMALL = 'font-family="system-ui, -apple-system, Segoe UI, sans-serif" font-size="10.5"'
WIDTH = 700
MET, MISSED, ESTIMATE = "#1f6fb2", "#b30000", "#1f6fb2"
POINT_R = 4.5
RUNS_PER_PANEL = 40
LOWEST_DECADE = -4          # 0.01 %: anything faster is drawn on the floor as a triangle


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


def percent_text(share: float) -> str:
    """A share of the RTO as a percentage with two significant figures at most (0.017 %, 4.2 %, 130 %)."""
    pct = share * 100
    if pct >= 10:
        return f"{pct:.0f} %"
    digits = max(0, 1 - math.floor(math.log10(pct))) if pct > 0 else 0
    return f"{pct:.{digits}f} %"


def _decade_text(decade: int) -> str:
    """A grid line's label: 0.01 %, 0.1 %, 1 %, 10 %, 100 %, 1000 %."""
    places = max(0, -(decade + 2))
    return f"{10.0 ** (decade + 2):.{places}f} %"


def compared_seconds(d: dict[str, Any]) -> float | None:
    """The recovery time the RTO is held to: a sampled drill's estimate for the whole snapshot, else measured."""
    if d.get("rto_basis") == "estimate" and d.get("estimated_full_seconds") is not None:
        return float(d["estimated_full_seconds"])
    return None if d.get("recovery_seconds") is None else float(d["recovery_seconds"])


def share_scale(shares: Sequence[float]) -> tuple[float, float]:
    """The log10 range of the share axis: whole decades from at most 1 % to at least 200 %, so that 1 % and
    100 % are always on it, widened to every share (down to 0.01 %)."""
    positive = [s for s in shares if s > 0]
    low = min([-2.0] + [math.floor(math.log10(s)) for s in positive])
    high = max([math.log10(2.0)] + [math.log10(s) + 0.15 for s in positive])
    return max(float(LOWEST_DECADE), low), high


def rto_panels(drills: Sequence[dict[str, Any]], width: int = WIDTH) -> str:
    """One panel per drill definition: its drills in order (the last RUNS_PER_PANEL), each drill's recovery
    time as a share of its own RTO on a log scale shared by all panels; the RTO is the 100 % line."""
    points = [d for d in drills if compared_seconds(d) is not None and d.get("rto_seconds")]
    if not points:
        return _empty(width, 80, "rto-chart", "no drill in this period got as far as a recovery time")
    names = list(dict.fromkeys(d["name"] for d in sorted(points, key=lambda d: d["name"])))
    share = {d["id"]: compared_seconds(d) / d["rto_seconds"] for d in points}  # type: ignore[operator]
    low, high = share_scale(list(share.values()))
    left, right, legend_h, title_h, plot_h, axis_h = 64, 16, 26, 34, 96, 18
    plot_w = width - left - right
    panel_h = title_h + plot_h + axis_h + 8
    height = legend_h + panel_h * len(names)
    out = [f'<svg class="chart rto-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="Recovery time as a share of each drill\'s RTO">',
           "<title>Recovery time as a share of each drill's RTO (log scale; 100 % = the RTO)</title>",
           _rto_legend(left)]
    for i, name in enumerate(names):
        series = sorted((d for d in points if d["name"] == name), key=lambda d: (d["started"], d["id"]))
        shown = series[-RUNS_PER_PANEL:]
        top = legend_h + i * panel_h
        out.append(_panel(name, shown, len(series), share, top, left, plot_w, title_h, plot_h, low, high))
    out.append("</svg>")
    return "".join(out)


def _rto_legend(x0: int) -> str:
    y, x, parts = 14, float(x0), []
    for mark, text in ((f'<circle cx="{{x}}" cy="{y - 4}" r="{POINT_R}" fill="{MET}"/>', "measured (whole snapshot)"),
                       (f'<circle cx="{{x}}" cy="{y - 4}" r="{POINT_R}" fill="#fff" stroke="{ESTIMATE}" '
                        f'stroke-width="2"/>', "estimated from a sample"),
                       (f'<circle cx="{{x}}" cy="{y - 4}" r="{POINT_R}" fill="{MISSED}"/>', "RTO missed"),
                       (f'<path d="M{{left}},{y - 4}h20" stroke="{MISSED}" stroke-dasharray="5 3"/>', "RTO (100 %)")):
        wide = 20 if mark.startswith("<path") else 10
        parts.append(mark.format(x=f"{x + 5:.1f}", left=f"{x:.1f}"))
        parts.append(f'<text x="{x + wide + 4:.1f}" y="{y}" {FONT} fill="#333">{escape(text)}</text>')
        x += wide + 4 + 6.8 * len(text) + 18
    return "".join(parts)


def _panel(name: str, series: list[dict[str, Any]], total: int, share: dict[int, float], top: int, left: int,
           plot_w: int, title_h: int, plot_h: int, low: float, high: float) -> str:
    last = series[-1]
    rto = float(last["rto_seconds"])
    latest = share[last["id"]]
    state = "missed" if last.get("rto_met") is False else "met" if last.get("rto_met") else "not measured"
    heading = f"{name}: RTO {hours_text(rto)}"
    figures = (f"latest #{last['id']}: {duration_text(compared_seconds(last))}"
               f"{' (estimate)' if last.get('rto_basis') == 'estimate' else ''} = {percent_text(latest)} of the "
               f"RTO, {state}")
    if total > len(series):
        figures += f" (last {len(series)} of {total} drills shown)"
    plot_top = top + title_h

    def py(value: float) -> float:
        v = min(max(math.log10(value) if value > 0 else low, low), high)
        return plot_top + plot_h - (v - low) / (high - low) * plot_h

    step = plot_w / len(series)

    def px(i: int) -> float:
        return left + step * (i + 0.5)

    out = [f'<g class="rto-panel" data-drill="{escape(name)}">',
           f'<text class="panel-title" x="{left}" y="{top + 13}" {FONT} fill="#222"><tspan font-weight="600">'
           f'{escape(heading)}</tspan><tspan x="{left}" dy="15" {SMALL} fill="#444">{escape(figures)}</tspan></text>',
           f'<rect class="plot" x="{left}" y="{plot_top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" '
           f'stroke="#ccc"/>']
    for decade in range(math.ceil(low), math.floor(high) + 1):
        y = py(10.0 ** decade)
        out.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#e3e3e3"/>'
                   f'<text class="tick" x="{left - 6}" y="{y + 3.5:.1f}" text-anchor="end" {SMALL} fill="#444">'
                   f'{_decade_text(decade)}</text>')
    target = py(1.0)
    out.append(f'<line class="rto-target" x1="{left}" y1="{target:.1f}" x2="{left + plot_w}" y2="{target:.1f}" '
               f'stroke="{MISSED}" stroke-dasharray="5 3"/>')
    floor, ceiling = plot_top + plot_h - POINT_R - 1, plot_top + POINT_R + 1
    placed = []
    for i, d in enumerate(series):
        value = share[d["id"]]
        below = value > 0 and math.log10(value) < low    # off the scale: a triangle pointing down, on the floor
        placed.append((d, value, px(i), floor if below else min(max(py(value), ceiling), floor), below))
    if len(series) > 1:
        line = " ".join(f"{x:.1f},{y:.1f}" for _, _, x, y, _ in placed)
        out.append(f'<polyline points="{line}" fill="none" stroke="#9bbad6" stroke-width="1.5"/>')
    for d, value, x, y, below in placed:
        missed = d.get("rto_met") is False
        estimate = d.get("rto_basis") == "estimate"
        colour = MISSED if missed else MET
        tip = (f"#{d['id']} {d['started'][:16].replace('T', ' ')}: {duration_text(compared_seconds(d))}"
               f"{' (estimate)' if estimate else ''} = {percent_text(value)} of RTO {hours_text(d['rto_seconds'])}")
        css = f'rto-point{" missed" if missed else ""}{" estimate" if estimate else ""}'
        if below:
            out.append(f'<path class="{css} below" data-x="{x:.1f}" data-y="{y:.1f}" '
                       f'd="M{x - POINT_R:.1f},{y - POINT_R:.1f}H{x + POINT_R:.1f}L{x:.1f},{y + POINT_R:.1f}Z" '
                       f'fill="{colour}"><title>{escape(tip)}</title></path>')
            continue
        out.append(f'<circle class="{css}" cx="{x:.1f}" cy="{y:.1f}" r="{POINT_R}" '
                   f'fill="{"#fff" if estimate else colour}" stroke="{colour}" stroke-width="2">'
                   f'<title>{escape(tip)}</title></circle>')
    axis_y = plot_top + plot_h + 13
    labels = {0: series[0], len(series) - 1: series[-1]}
    for i, d in labels.items():
        anchor = "start" if i == 0 and len(series) > 1 else "end" if i else "middle"
        x = left if anchor == "start" else left + plot_w if anchor == "end" else px(i)
        out.append(f'<text x="{x:.1f}" y="{axis_y}" text-anchor="{anchor}" {SMALL} fill="#555">'
                   f'#{d["id"]} {escape(d["started"][:16].replace("T", " "))}</text>')
    out.append("</g>")
    return "".join(out)


def phase_bars(drills: Sequence[dict[str, Any]], width: int = WIDTH) -> str:
    """Stacked horizontal bars, one per drill under its full name, one segment per phase; a segment wide
    enough shows its seconds, the others are named on the drill's line, the total follows the bar."""
    if not drills:
        return _empty(width, 80, "phase-chart", "no drills in this period")
    left, right, top, row, bar_h = 8, 64, 40, 36, 14
    plot_w = width - left - right
    height = top + row * len(drills) + 22
    totals = [sum(p["seconds"] for p in d["phases"]) for d in drills]
    ticks = nice_ticks(max(totals) or 1.0)
    scale = plot_w / ticks[-1]
    out = [f'<svg class="chart phase-chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="Phase durations per drill">',
           '<title>Phase durations per drill (seconds)</title>']
    legacy = [n for n in LEGACY_PHASE_COLOURS if any(p["name"] == n for d in drills for p in d["phases"])]
    out.append(_legend(list(PHASE_COLOURS) + legacy, left, 14, PHASE_COLOURS | LEGACY_PHASE_COLOURS))
    for t in ticks:
        x = left + t * scale
        out.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{height - 20}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{x:.1f}" y="{height - 6}" text-anchor="middle" {SMALL} fill="#444">{_num(t)} s</text>')
    for i, (drill, total) in enumerate(zip(drills, totals, strict=True)):
        y = top + i * row + 13
        x = float(left)
        bars, narrow = [], []
        for phase in drill["phases"]:
            w = phase["seconds"] * scale
            if w <= 0:
                continue
            name = phase["name"]
            tip = f"#{drill['id']} {drill['name']}: {name} {phase['seconds']:.2f} s"
            if phase.get("mb_per_second"):
                tip += f", {phase['mb_per_second']:.1f} MB/s"
            bars.append(f'<rect class="bar phase-{escape(name)}" x="{x:.2f}" y="{y}" width="{max(w, 0.5):.2f}" '
                        f'height="{bar_h}" fill="{_phase_colour(name)}"><title>{escape(tip)}</title></rect>')
            text = f"{phase['seconds']:.1f}"
            if w >= 7 * len(text) + 6:
                ink = "#222" if name in LIGHT_PHASES else "#fff"
                bars.append(f'<text x="{x + w / 2:.1f}" y="{y + 11}" text-anchor="middle" {SMALL} fill="{ink}">'
                            f"{text}</text>")
            else:
                narrow.append(f"{name} {phase['seconds']:.2f} s")
            x += w
        label = f"#{drill['id']} {drill['name']} ({drill['started'][:16].replace('T', ' ')})"
        failed = "" if drill.get("passed") else '<tspan fill="#b30000" font-weight="600"> ✗ failed</tspan>'
        small = f'<tspan fill="#666"> · {escape(", ".join(narrow))}</tspan>' if narrow else ""
        out.append(f'<text x="{left}" y="{y - 3}" {SMALL} fill="#222">{escape(label)}{failed}{small}</text>')
        out += bars
        out.append(f'<text x="{left + plot_w + 6}" y="{y + 11}" {SMALL} fill="#444">{total:.1f} s</text>')
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
