"""Command-line interface: ``isoplastic train | inspect | bench | reproduce``.

Imported only by the ``isoplastic`` console script and ``python -m isoplastic``. It needs the
``cli`` extra (click, tqdm, scikit-learn, matplotlib: ``pip install 'isoplastic[cli]'``); without
click, :func:`main` prints one line naming the extra and exits with status 1.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

from ..errors import CLI_EXTRA

MISSING_CLICK = (
    "isoplastic: the command line needs click, which the core install of isoplastic does not "
    f"include; install the extra: pip install 'isoplastic[{CLI_EXTRA}]'"
)

try:
    import click  # noqa: F401  (only to learn whether the extra is installed)
except ModuleNotFoundError as exc:
    if exc.name != "click":
        raise

    def main(*args: Any, **kwargs: Any) -> NoReturn:
        """Stand-in for the command group when click is absent: one line on stderr, exit 1."""
        sys.exit(MISSING_CLICK)

else:
    from ._app import main

__all__ = ["main"]
