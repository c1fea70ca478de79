"""Command-line interface: ``isoplastic train | inspect | bench | reproduce``.

Imported only by the ``isoplastic`` console script and ``python -m isoplastic``.
"""

from __future__ import annotations

import click

from .bench import bench
from .inspect import inspect_cmd
from .reproduce import reproduce_cmd
from .train import train_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="isoplastic")
def main() -> None:
    """Isotropic neural networks with adaptive topology."""


main.add_command(train_cmd)
main.add_command(inspect_cmd)
main.add_command(bench)
main.add_command(reproduce_cmd)

__all__ = ["main"]
