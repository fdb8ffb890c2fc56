"""The ``clearnb`` command: run notebooks as tasks and inspect them from a terminal.

Each command group lives in its own module; this one puts them under ``main``, the
console script. The groups never import this module back.
"""

from __future__ import annotations

import click

from clearnb.cli.agents import agent_command, queue
from clearnb.cli.pipelines import pipeline
from clearnb.cli.run import run_pipeline_command
from clearnb.cli.tasks import task

__all__ = ["main"]


@click.group()
@click.version_option(package_name="clearnb")
def main() -> None:
    """clearnb: pipelines of Jupyter notebooks without a server."""


main.add_command(task)
main.add_command(agent_command)
main.add_command(queue)
main.add_command(run_pipeline_command)
main.add_command(pipeline)
