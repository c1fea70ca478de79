"""Exception types. Every error names the problem, the value received and the fix.

Every exception the library raises derives from :class:`IsoplasticError`; each also keeps the
built-in base that describes it (``ValueError``, ``TypeError``, ``ImportError``, ...), so
``except ValueError`` clauses keep working.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
from types import ModuleType

#: The extra that installs the command line, the trainer's progress bar, the embedded digits
#: data (scikit-learn) and the plots (matplotlib): ``pip install 'isoplastic[cli]'``.
CLI_EXTRA = "cli"


class IsoplasticError(Exception):
    """Base class of every error raised by isoplastic."""


class TopologyError(IsoplasticError, ValueError):
    """A structural change was asked for that the network cannot take (bad layer, width, matrix).

    Raised before anything is modified: the model and optimizer are left as they were.
    """


class UnsupportedOptimizerError(IsoplasticError, TypeError):
    """The optimizer holds per-parameter state whose transport under a change of basis is unknown."""


class NonFiniteError(IsoplasticError, ValueError):
    """A tensor that a structural change would read holds NaN or Inf."""


class OptimizerStateError(IsoplasticError, ValueError):
    """Saved optimizer state does not fit the optimizer it is loaded into (name, shape, dtype).

    Raised before anything is modified: the optimizer is left as it was.
    """


class DataError(IsoplasticError, ValueError):
    """A data set could not be loaded; the message says what is wrong, where, and the fix.

    Re-exported as :class:`isoplastic.data.DataError`.
    """


class ConfigError(IsoplasticError, ValueError):
    """A training configuration value is invalid; the message names the field and the fix.

    Re-exported as :class:`isoplastic.train.config.ConfigError`.
    """


class MissingExtraError(IsoplasticError, ImportError):
    """An optional feature needs a package that the core install does not bring.

    The core (``pip install isoplastic``) needs torch, numpy and safetensors only; the command
    line, progress bars, the embedded digits data and the plots come with an extra, which the
    message names (``pip install 'isoplastic[cli]'``; the ``"mnist-5k"`` data set:
    ``isoplastic[mnist5k]``).
    """


def import_extra(
    module: str, *, feature: str, package: str | None = None, extra: str = CLI_EXTRA
) -> ModuleType:
    """Import an optional dependency, or raise :class:`MissingExtraError` naming the extra.

    Args:
        module: the module to import, e.g. ``"sklearn.datasets"``.
        feature: what needs it, for the message, e.g. ``"the embedded digits data set"``.
        package: the distribution to name in the message when it differs from the module's
            top-level name, e.g. ``"scikit-learn"`` for ``sklearn``.
        extra: the extra of ``isoplastic`` that installs it.

    Returns:
        The imported module.

    Raises:
        MissingExtraError: the module (or its top-level package) is not installed. An
            ``ImportError`` raised *inside* an installed package is not hidden: it propagates.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.split(".")[0]
        if exc.name is None or exc.name.split(".")[0] != top:
            raise  # the package is there but one of *its* imports failed: show that error
        raise _missing_extra(top, feature=feature, package=package, extra=extra) from exc


def find_extra(
    package_name: str, *, feature: str, package: str | None = None, extra: str = CLI_EXTRA
) -> importlib.machinery.ModuleSpec:
    """Locate an optional top-level package *without importing it*, or raise
    :class:`MissingExtraError` naming the extra.

    For a dependency used only for the files inside its wheel (its import would run code that
    is not needed and may be slow).  The arguments are those of :func:`import_extra`;
    ``package_name`` is a top-level name such as ``"mlxtend"``.

    Returns:
        The package's spec; ``spec.submodule_search_locations`` lists its directories.
    """
    spec = importlib.util.find_spec(package_name)
    if spec is None:
        raise _missing_extra(package_name, feature=feature, package=package, extra=extra)
    return spec


def _missing_extra(top: str, *, feature: str, package: str | None, extra: str) -> MissingExtraError:
    """The error of :func:`import_extra` and :func:`find_extra` for the absent package ``top``."""
    return MissingExtraError(
        f"{feature} needs {package or top}, which the core install of isoplastic does not "
        f"include; install the extra: pip install 'isoplastic[{extra}]'",
        name=top,
    )
