"""`media init|sync|list`: offline media."""

# no `from __future__ import annotations`: typer would eval every string annotation at each start (common.py)

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer

from backupctl.cli import common
from backupctl.cli.common import human_bytes, out, print_json, short_time
from backupctl.cli.common import table as make_table
from backupctl.errors import TargetError, UsageError

if TYPE_CHECKING:
    from backupctl.config import MediaTargetConfig
    from backupctl.targets.media import MediaTarget

# Each command imports its actions in its body: a command loads only what it runs (see cli/common.py).

app = typer.Typer(help="Offline media: label, sync and list the rotating disks.", no_args_is_help=True)


def _media_target(name: str) -> "tuple[MediaTarget, MediaTargetConfig]":
    from backupctl.targets import make_target
    from backupctl.targets.media import MediaTarget

    config = common.load()
    target = make_target(config, name)
    if not isinstance(target, MediaTarget):
        raise UsageError(f"target {name} is not an offline media target")
    return target, target.cfg


@app.command("init")
def init(
    target: Annotated[str, typer.Argument(help="Media target name ([targets.NAME] with type = \"media\").")],
    label: Annotated[str, typer.Option("--label", "-l", help="One of the target's configured labels.")],
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Label the blank disk mounted at the target's mount point."""
    from backupctl.catalog import media as media_rows
    from backupctl.catalog import open_catalog
    from backupctl.targets.media import init_medium

    config = common.load()
    medium_target, cfg = _media_target(target)
    medium = init_medium(cfg, target, label)
    with open_catalog(config.catalog_path) as catalog:
        media_rows.register_medium(catalog, target, medium.label, medium.media_id, medium.created)
    if json_output:
        print_json({"ok": True, "target": target, "mount": str(cfg.mount), "label": medium.label,
                    "media_id": medium.media_id, "created": medium.created})
        return
    out.print(f"labelled the disk at {cfg.mount} as '{label}' for target {target}")


@app.command("sync")
def sync(target: Annotated[str, typer.Argument(help="Media target name.")],
         json_output: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Copy the staging repository's new files to the mounted disk, checking each by its name."""
    from backupctl.actions.replicate import replicate_to
    from backupctl.catalog import media as media_rows
    from backupctl.catalog import open_catalog

    config = common.load()
    medium_target, _ = _media_target(target)
    medium = medium_target.current_label()
    with open_catalog(config.catalog_path) as catalog:
        media_rows.register_medium(catalog, target, medium.label, medium.media_id, medium.created)
        outcome = replicate_to(config, catalog, target, common.progress(json_output))
    if json_output:
        print_json({"ok": outcome.ok, **outcome.as_dict()})
    if not outcome.ok:
        raise TargetError(outcome.error or "sync failed")
    if not json_output and outcome.report:
        copied = human_bytes(outcome.report.uploaded_bytes)
        out.print(f"{medium.label}: {outcome.report.uploaded} files copied ({copied}), "
                  f"{outcome.report.skipped} already there, {len(outcome.snapshots)} snapshots on the disk")


def media_status(config, catalog) -> list[dict]:  # noqa: ANN001 - used by `status` too
    """Every configured medium: last sync, age against the rotation interval, snapshots held."""
    from backupctl.catalog import media as media_rows
    from backupctl.targets.media import disk_present, read_label

    now = datetime.now(UTC)
    rows = []
    known = {(m["target"], m["label"]): m for m in media_rows.list_media(catalog)}
    for name, cfg in config.settings.targets.items():
        if cfg.type != "media":
            continue
        mount = config.resolve(cfg.mount)
        mounted = read_label(mount) if disk_present(mount, cfg.allow_unmounted) else None
        for label in cfg.labels:
            m = known.get((name, label), {})
            last = m.get("last_sync")
            age_days = (now - datetime.fromisoformat(last)).total_seconds() / 86400 if last else None
            state = "never synced" if last is None else ("stale" if age_days > cfg.rotation_days else "ok")
            rows.append({"target": name, "label": label, "mounted": bool(mounted and mounted.label == label),
                         "last_sync": last, "age_days": age_days, "rotation_days": cfg.rotation_days,
                         "state": state, "snapshots": len(m.get("snapshots", [])),
                         "bytes": m.get("last_sync_bytes")})
    return rows


@app.command("list")
def list_media(json_output: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Each medium, its last sync and its age against the rotation interval."""
    from backupctl.catalog import open_catalog

    config = common.load()
    with open_catalog(config.catalog_path) as catalog:
        rows = media_status(config, catalog)
    if json_output:
        print_json(rows)
        return
    table = make_table("target", "label", "mounted", "last sync", "age", "rotation", "state", "snapshots", "size")
    for r in rows:
        colour = {"ok": "green", "stale": "red"}.get(r["state"], "yellow")
        age = f"{r['age_days']:.1f} d" if r["age_days"] is not None else "-"
        table.add_row(r["target"], r["label"], "yes" if r["mounted"] else "", short_time(r["last_sync"]), age,
                      f"{r['rotation_days']:g} d", f"[{colour}]{r['state']}[/]", str(r["snapshots"]),
                      human_bytes(r["bytes"]))
    out.print(table if rows else "no media targets configured")
