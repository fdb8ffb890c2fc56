"""Options more than one command takes, each declared once with its help."""

from __future__ import annotations

import click

parameter_option = click.option(
    "-p",
    "--parameter",
    "parameters",
    nargs=2,
    multiple=True,
    metavar="NAME VALUE",
    help="Override a parameter: NAME or Section/NAME, typed like the notebook's default.",
)
"""``-p NAME VALUE``, repeatable: the parameter overrides of a notebook run."""

memory_limit_option = click.option(
    "--memory-limit",
    default=None,
    metavar="SIZE",
    help="Memory the kernel may use, e.g. 2GB; over it, the run is stopped and fails.",
)
"""``--memory-limit SIZE``: the kernel's memory cap."""
