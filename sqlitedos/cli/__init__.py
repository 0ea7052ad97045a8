"""The ``sqlitedos`` command: create, inspect, query, archive, maintain, back up and verify storage folders.

The only package that imports ``click``: ``common`` holds the ``cli`` group and what the commands share, and one
module per command group adds its commands to it. Errors print one line (``Error: ...``) and exit with status 1
(2 for a command called wrongly); long work shows progress bars on a terminal and stays quiet in pipes.
"""

from __future__ import annotations

from sqlitedos.cli import archive_commands, demo, node_commands, storage_commands
from sqlitedos.cli.common import cli, parse_filter, render_table
from sqlitedos.cli.demo import build_demo_graph

__all__ = ('build_demo_graph', 'cli', 'main', 'parse_filter', 'render_table')

_COMMAND_MODULES = (archive_commands, demo, node_commands, storage_commands)  # imported for their commands


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``sqlitedos`` command and ``python -m sqlitedos``."""
    cli.main(args=argv, prog_name='sqlitedos')
