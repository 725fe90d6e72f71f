"""``python -m tiercache.cli``: the ``tiercache`` command."""

from . import main

main()
