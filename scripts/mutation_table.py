#!/usr/bin/env python
"""Kill rate per module from a ``mutmut run`` (``make mutate``), as the table of
docs/reliability.md.

    python scripts/mutation_table.py                      # reads ./mutants
    python scripts/mutation_table.py --survivors          # and lists the surviving mutants

mutmut 3 keeps one ``<module>.py.meta`` JSON file per mutated file under ``mutants/``, mapping
each mutant to the exit code of its test run (1: a test failed, the mutant is killed; 0: every
test passed, it survived; 33: no selected test reaches the function; a timeout or crash counts
as killed). Surviving mutants listed in ``scripts/mutation_equivalent.txt`` (one name per line, then
``#`` and its class; see docs/reliability.md for the classes) are excluded from the rate:
``rate = killed / (run - excluded)``; a survivor that is not listed there counts against it.
``run`` counts the mutants that have a result: a run stopped early (or a module left out of
``MUTATE_MODULES``) leaves the others without one, and the rate is then over those run only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

KILLED = {1, 3, 24, -24, 36, 152, 255, -9, -11}  # test failure, pytest error, timeout, crash
SURVIVED = {0}
NO_TESTS = {5, 33}


def equivalents(path: Path) -> dict[str, str]:
    out = {}
    if path.exists():
        for line in path.read_text().splitlines():
            name, _, why = line.partition("#")
            if name.strip():
                out[name.strip()] = why.strip()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutants", default="mutants", help="mutmut's working folder")
    parser.add_argument("--equivalent", default=str(Path(__file__).with_name(
        "mutation_equivalent.txt")), help="mutants excluded as equivalent")
    parser.add_argument("--survivors", action="store_true", help="list surviving mutants")
    args = parser.parse_args()
    excluded = equivalents(Path(args.equivalent))
    metas = sorted(Path(args.mutants).glob("src/**/*.py.meta"))
    if not metas:
        print(f"no mutmut results under {args.mutants}/src; run `make mutate` first",
              file=sys.stderr)
        return 1
    print("| module | mutants | run | killed | survived | no test reaches it "
          "| equivalent-excluded | kill rate (of run) |")
    print("|---|---|---|---|---|---|---|---|")
    survivors: list[str] = []
    wrong: list[str] = []
    for meta in metas:
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        module = str(meta.relative_to(Path(args.mutants) / "src" / "isoplastic"))[:-5]
        if all(c is None for c in codes.values()):
            print(f"| `{module}` | {len(codes)} | 0 | | | | | not run |")
            continue
        # only a surviving mutant can be excluded; a listed one that a test kills is a mistake
        # in the list, reported below
        eq = {n for n, c in codes.items() if n in excluded and c in SURVIVED | NO_TESTS}
        wrong += [n for n, c in codes.items() if n in excluded and c in KILLED]
        killed = sum(1 for n, c in codes.items() if c in KILLED and n not in eq)
        alive = [n for n, c in codes.items() if c in SURVIVED and n not in eq]
        unreached = sum(1 for n, c in codes.items() if c in NO_TESTS and n not in eq)
        run = sum(1 for c in codes.values() if c is not None)
        counted = run - len(eq)
        rate = f"{100 * killed / counted:.0f} %" if counted else "-"
        print(f"| `{module}` | {len(codes)} | {run} | {killed} | {len(alive)} | {unreached} "
              f"| {len(eq)} | {rate} |")
        survivors += alive
    if wrong:
        print(f"\nlisted as equivalent but killed (remove from {args.equivalent}):", *wrong,
              sep="\n  ")
    if args.survivors:
        print()
        print("\n".join(survivors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
