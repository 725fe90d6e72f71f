"""``tiercache invalidate``: drop vectors and attached results by document id, tag, text
or everything, on this host and (with a fleet channel) every host."""

from __future__ import annotations

import json
from typing import Any

import click

from .common import _config, _handled


@click.command()
@click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False),
    help="YAML config file (default: the packaged default config).",
)
@click.option(
    "--event",
    type=click.Choice(["updated", "deleted", "created"]),
    default=None,
    help="A document event for --id: updated/deleted drop its vectors and results, "
    "created drops only results tagged like it.",
)
@click.option("--id", "doc_ids", multiple=True, help="Document id (repeatable); digits = int id.")
@click.option("--tag", "tags", multiple=True, help="Tag (repeatable): drop what carries it.")
@click.option("--text", "texts", multiple=True, help="Content whose vector to drop (repeatable).")
@click.option("--clear", "clear_all", is_flag=True, help="Drop everything (every tier).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def invalidate(
    config_path: str | None,
    event: str | None,
    doc_ids: tuple[str, ...],
    tags: tuple[str, ...],
    texts: tuple[str, ...],
    clear_all: bool,
    as_json: bool,
) -> None:
    """Invalidate cached vectors (and attached search results) everywhere: in this
    host's tiers, every worker process on its warm store before their next read, the
    shared Redis tier and, with shared.invalidation: stream, every host of the fleet.

    \b
      tiercache invalidate -c prod.yaml --event updated --id 42 --tag col:news
      tiercache invalidate -c prod.yaml --tag col:news
      tiercache invalidate -c prod.yaml --text "some query" --text "another"
    """
    if not (doc_ids or tags or texts or clear_all):
        raise click.UsageError("say what to invalidate: --id, --tag, --text or --clear")
    if event and not doc_ids:
        raise click.UsageError("--event needs the document's --id")
    from ..cache import TierCache

    with _handled():
        cfg = _config(config_path)
        ids: list[Any] = [int(d) if d.isdigit() else d for d in doc_ids]
        removed = 0
        with TierCache(cfg) as c:
            if clear_all:
                c.clear()
            if event:
                for doc in ids:
                    removed += c.document_event(event, doc, tags=list(tags))
            else:
                if ids:
                    removed += c.drop_ids(ids)
                if tags:
                    removed += c.invalidate_tags(list(tags))
            if texts:
                removed += c.mdrop(list(texts))
            fleet = c.stats()["invalidation"].get("fleet")
        info = {"removed": removed, "cleared": clear_all, "published": bool(fleet)}
        if as_json:
            click.echo(json.dumps(info))
        else:
            where = "this host and the fleet" if fleet else "this host (no fleet channel)"
            what = "everything" if clear_all else f"{removed} vector(s)"
            click.echo(f"invalidated {what} in {where}")
