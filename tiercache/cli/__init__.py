"""The ``tiercache`` command line: thin wrappers that parse, call the library, print.

One module per group of commands; each imports the cache, LMDB, Redis, torch or the
simulator inside the command that needs it, so ``tiercache --help`` loads none of them:

- ``common``: the config, errors and Ctrl-C as exit codes, progress bars
- ``inputs``: input files (``--encoding``, ``--errors``, text and JSONL catalogs)
- ``journals``: the resume state of ``warm`` and ``migrate``
- ``embedding``: ``embed``, ``warm``
- ``simulation``: ``sim``
- ``store``: ``stats``, ``inspect``, ``compact``
- ``migration``: ``migrate``
- ``invalidate``: ``invalidate``
- ``configfile``: ``config check``, ``config show``
"""

from __future__ import annotations

import os

import click

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from . import configfile, embedding, invalidate, migration, simulation, store  # noqa: E402

# names the tests import from ``tiercache.cli``
from .common import _model_bars as _model_bars  # noqa: E402
from .inputs import ERRORS as ERRORS  # noqa: E402
from .simulation import SYNTHETIC_KINDS as SYNTHETIC_KINDS  # noqa: E402
from .simulation import _sim_hot as _sim_hot  # noqa: E402


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="tiercache")
def main() -> None:
    """tiercache: tiered embedding cache (hot RAM, warm LMDB, cold encoder).

    Every command takes --config FILE (YAML, see docs/configuration.md); without it the
    packaged default config is used (warm store under ./.tiercache/warm).
    """


main.add_command(embedding.embed)
main.add_command(embedding.warm)
main.add_command(invalidate.invalidate)
main.add_command(store.stats)
main.add_command(simulation.sim)
main.add_command(store.inspect)
main.add_command(migration.migrate)
main.add_command(store.compact)
main.add_command(configfile.config)
