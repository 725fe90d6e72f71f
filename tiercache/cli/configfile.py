"""``tiercache config check`` and ``config show``."""

from __future__ import annotations

import click

from ..config import config_to_dict, load_config
from ..errors import TierCacheError
from .common import _config, _fail


@click.group()
def config() -> None:
    """Check or print configuration files."""


@config.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def config_check(file: str) -> None:
    """Validate FILE; exit 2 naming the dotted key of the first problem."""
    from ..policy import get_policy

    try:
        cfg = load_config(file)
        get_policy(cfg.policy.name)
    except TierCacheError as exc:
        _fail(exc)
    click.echo(
        f"{file}: OK (policy {cfg.policy.name}, hot {cfg.hot.max_bytes} B, "
        f"warm {'off' if not cfg.warm.enabled else cfg.warm.path})"
    )


@config.command("show")
@click.argument("file", type=click.Path(dir_okay=False), required=False)
def config_show(file: str | None) -> None:
    """Print the effective config (FILE, or the packaged default) with defaults filled in."""
    import yaml

    try:
        cfg = _config(file)
    except TierCacheError as exc:
        _fail(exc)
    click.echo(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
