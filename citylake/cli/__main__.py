"""``python -m citylake.cli``: the same as the ``citylake`` command."""

from citylake.cli import run

run()
