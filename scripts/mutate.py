#!/usr/bin/env python
"""mutmut, with the bodies of ``@operation`` functions mutated too (``make mutate`` runs this).

    python scripts/mutate.py run --max-children 2 "isoplastic.core.space.*"   # as `mutmut run`
    python scripts/mutate.py --count src/isoplastic/ops/reparameterise.py    # mutants per function

mutmut 3 leaves every decorated function unmutated (a decorator may register the function or
replace it by something that is not a function, and its copies would repeat that). Every public
operation of the library carries exactly one decorator, ``@operation`` (``core/change.py``), which
only runs the body under ``full_precision()`` and returns an ordinary function: copying it is
harmless, and mutmut's own trampoline decorator is applied inside it. This script lets mutmut
treat a function whose only decorator is ``operation`` like an undecorated one, then hands over to
mutmut's command line unchanged. Any other decorator is still skipped, as mutmut decides.
"""

from __future__ import annotations

import collections
import sys

import libcst as cst
from libcst.metadata import PositionProvider
from mutmut.__main__ import cli
from mutmut.mutation import file_mutation

ALLOWED_DECORATORS = frozenset({"operation"})
"""Decorators that only wrap the body (no registration, no change of kind): safe to copy."""

_mutmut_skip = file_mutation.MutationVisitor._skip_node_and_children


def only_allowed_decorators(node: cst.CSTNode) -> bool:
    """Whether ``node`` is a function whose decorators are all plain names in the allowed set."""
    return (isinstance(node, cst.FunctionDef) and bool(node.decorators)
            and all(isinstance(d.decorator, cst.Name) and d.decorator.value in ALLOWED_DECORATORS
                    for d in node.decorators))


def _skip_node_and_children(self: file_mutation.MutationVisitor, node: cst.CSTNode) -> bool:
    if not only_allowed_decorators(node):
        return _mutmut_skip(self, node)
    # the one check of mutmut's that applies to a function definition: `# pragma: no mutate block`
    position = self.get_metadata(PositionProvider, node, None)
    if position is not None and position.start.line in self._ignored_node_lines:
        self.ignored_functions.add(node.name.value)
        return True
    return False


file_mutation.MutationVisitor._skip_node_and_children = _skip_node_and_children


def count(paths: list[str]) -> None:
    """Print the number of mutants of each function in each file (no tests are run)."""
    for path in paths:
        with open(path) as f:
            mutated = file_mutation.mutate_file_contents(path, f.read())
        per_function = collections.Counter(
            name.rsplit("__mutmut_", 1)[0] for name in mutated.mutant_names)
        print(f"{path}: {sum(per_function.values())} mutants")
        for name, n in sorted(per_function.items()):
            print(f"    {name}: {n}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--count"]:
        count(sys.argv[2:])
    else:
        cli()
