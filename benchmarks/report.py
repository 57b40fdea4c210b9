"""The Markdown rendering of a results document: ratios first, absolute times second, machine facts last."""

from __future__ import annotations

from typing import Any


def _fmt_s(side: dict[str, Any]) -> str:
    text = f"{side['median_s']:.2f} s ({side['min_s']:.2f}–{side['max_s']:.2f})"
    if "mb_per_s" in side:
        text += f", {side['mb_per_s']:.0f} MB/s"
    if "files_per_s" in side:
        text += f", {side['files_per_s']:.0f} files/s"
    return text


def _met(m: dict[str, Any]) -> str:
    if "meets_target" not in m:
        return ""
    return "yes" if m["meets_target"] else "**no**"


def ratios_table(measurements: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| measurement | ratio (A vs B) | per-pair range | target | met |", "|---|---|---|---|---|"]
    for name, m in measurements.items():
        if m["status"] != "measured" or "ratio" not in m:
            continue
        unit = "x time" if m["kind"] == "time" else ("x throughput/core" if "per core" in m["ratio_meaning"]
                                                       else "x throughput")
        lines.append(f"| {name}: {m['title']} | **{m['ratio']:.2f}** {unit} | "
                     f"{m['pair_ratio_min']:.2f}–{m['pair_ratio_max']:.2f} | {m.get('target', '')} | {_met(m)} |")
    return lines


def absolute_table(measurements: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["| measurement | A | A: median (min–max) | B | B: median (min–max) | load |", "|---|---|---|---|---|---|"]
    for name, m in measurements.items():
        if m["status"] != "measured" or "a" not in m:
            continue
        a, b = m["a"], m.get("b")
        lines.append(f"| {name} | {a['label']} | {_fmt_s(a)} | {b['label'] if b else ''} | "
                     f"{_fmt_s(b) if b else ''} | {m.get('load_average', '')} |")
    return lines


def rows_table(rows: list[dict[str, Any]]) -> list[str]:
    """A list of flat dicts as a Markdown table (columns: every key, in first-seen order)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return lines


def figures_lines(measurements: dict[str, dict[str, Any]]) -> list[str]:
    lines: list[str] = []
    for name, m in measurements.items():
        figures = m.get("figures", {})
        scalars = {k: v for k, v in figures.items() if not isinstance(v, list)}
        if scalars:
            lines.append(f"- {name}: " + ", ".join(f"{k} {v}" for k, v in scalars.items()))
        for note in m.get("notes", []):
            lines.append(f"- {name}: {note}")
        for key, value in figures.items():
            if isinstance(value, list) and value:
                lines += ["", f"{name} ({key}):", "", *rows_table(value), ""]
    return lines


def not_measured_lines(measurements: dict[str, dict[str, Any]]) -> list[str]:
    return [f"- {name}: {m['status']}: {m.get('reason') or m.get('error')}"
            for name, m in measurements.items() if m["status"] != "measured"]


def render(doc: dict[str, Any]) -> str:
    ms = doc["measurements"]
    machine = doc["machine"]
    work = doc["workload"]
    out = [f"# backupctl benchmarks ({doc['finished'][:19].replace('T', ' ')} UTC)", "",
           f"Workload: {work['files']} synthetic CT files, {work['bytes'] / 1e9:.2f} GB "
           f"({work['rows']}x{work['rows']} 16-bit); {doc['args']['repeats']} interleaved rounds per pair "
           f"(A B, B A, ...); ratio = median A vs median B; whole run {doc.get('wall_seconds', '?')} s.", "",
           "## Ratios", "", *ratios_table(ms), "", "## Absolute times", "", *absolute_table(ms), ""]
    extra = figures_lines(ms)
    if extra:
        out += ["## Figures and notes", "", *extra, ""]
    skipped = not_measured_lines(ms)
    if skipped:
        out += ["## Not measured", "", *skipped, ""]
    out += ["## Machine", ""]
    out += [f"- {key}: {value}" for key, value in machine.items()]
    return "\n".join(out) + "\n"
