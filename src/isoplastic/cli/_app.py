"""The ``isoplastic`` click group: ``train | inspect | bench | reproduce``."""

from __future__ import annotations

import click

from ..errors import MissingExtraError
from .bench import bench
from .inspect import inspect_cmd
from .reproduce import reproduce_cmd
from .train import train_cmd


class _Group(click.Group):
    """A group that reports a missing optional dependency in one line instead of a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except MissingExtraError as exc:
            raise click.ClickException(str(exc)) from exc


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="isoplastic")
def main() -> None:
    """Isotropic neural networks with adaptive topology."""


main.add_command(train_cmd)
main.add_command(inspect_cmd)
main.add_command(bench)
main.add_command(reproduce_cmd)
