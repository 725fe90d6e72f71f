"""What every command shares: the config (``--config`` or the packaged default), library
errors and Ctrl-C turned into exit codes and messages, progress bars drawn on a terminal
only, the model loader's own bars kept quiet, and the model's load time kept out of
throughput figures."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import click

from ..config import TierCacheConfig, default_config, load_config
from ..errors import TierCacheError


def _config(path: str | None) -> TierCacheConfig:
    return load_config(path) if path else default_config()


def _fail(exc: Exception) -> NoReturn:
    click.echo(f"error: {exc}", err=True)
    sys.exit(2)


def _interrupted(what: str) -> NoReturn:
    """Ctrl-C: say what was done and how to go on, exit 130 (128 + SIGINT, as shells do)."""
    click.echo(f"\ninterrupted (Ctrl-C): {what}", err=True)
    sys.exit(130)


def _by_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a KeyboardInterrupt: the library reports one raised
    inside the encoder as an ``EncoderError`` caused by it."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, KeyboardInterrupt):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


def _nothing_changed() -> str:
    return "nothing was changed"


@contextlib.contextmanager
def _handled(
    on_interrupt: Callable[[], str] = _nothing_changed,
    errors: tuple[type[Exception], ...] = (TierCacheError, OSError),
) -> Iterator[None]:
    """Run a command's body: ``errors`` exit 2 with ``error: ...``; Ctrl-C (also when the
    library reports it as an error it caused) exits 130 with ``on_interrupt()``: what was
    committed and how to resume."""
    try:
        yield
    except KeyboardInterrupt:
        _interrupted(on_interrupt())
    except errors as exc:
        if _by_interrupt(exc):
            _interrupted(on_interrupt())
        _fail(exc)


def _show_progress(no_progress: bool) -> bool:
    """Progress bars are drawn on a terminal only, and never with --no-progress."""
    return not no_progress and sys.stderr.isatty()


@contextlib.contextmanager
def _model_bars(show: bool) -> Iterator[None]:
    """Keep the model loader's own progress bars (transformers' "Loading weights",
    huggingface_hub's) off stderr unless ``show``. The model loads lazily, wherever the
    first text is encoded, so this covers a whole command: ``HF_HUB_DISABLE_PROGRESS_BARS``
    for libraries imported meanwhile (they read it on import; they keep their bars off in
    this process), and the switches of those already imported (restored afterwards)."""
    if show:
        yield
        return
    env = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    hub: Any = sys.modules.get("huggingface_hub.utils")
    tf: Any = sys.modules.get("transformers.utils.logging")
    hub_on = hub is not None and not hub.are_progress_bars_disabled()
    tf_on = tf is not None and bool(tf.is_progress_bar_enabled())
    if hub_on:
        hub.disable_progress_bars()
    if tf_on:
        tf.disable_progress_bar()
    try:
        yield
    finally:
        if env is None:
            os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)
        else:
            os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = env
        if hub_on:
            hub.enable_progress_bars()
        if tf_on:
            tf.enable_progress_bar()


def _minus_load(seconds: float, loaded: float) -> float:
    """A command's elapsed time without the model's load (on the first miss), which is
    printed apart: throughput counts encoding, not start-up."""
    if loaded > 0:
        click.echo(f"model loaded in {loaded:.2f} s (on the first miss; not counted below)")
    return max(seconds - loaded, 1e-9)
