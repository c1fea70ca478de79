# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow test-all lint venv bench fuzz mutate clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[cli,test,tensorboard]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/isoplastic train --out runs/demo

# `make test` (the README's command) skips the tests marked slow (subprocess-heavy: DDP, SIGKILL,
# README snippets, example scripts; < 3 min on 2 cores); `make test-slow` runs only those, and
# `make test-all` everything. CI (.ci/run) runs `make test` and then `make test-slow`.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

test-all: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

bench: $(STAMP)   ## regenerate docs/benchmarks.md (installs the optional Torch-Pruning baseline)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[cli,test,tensorboard,bench]'
	$(BIN)/isoplastic bench --quick --json benchmarks/results-quick.json --report docs/benchmarks.md

fuzz: $(STAMP)    ## the long reliability run: 200 fuzzed sequences and 20 kill-and-resume trials
	$(BIN)/python scripts/fuzz.py --sequences 200 --crash-trials 20

# `make mutate` mutates every module of MUTATE_MODULES in one mutmut run (one baseline run of the
# test selection, then the mutants cheapest first; the selection is [tool.mutmut] in
# pyproject.toml). scripts/mutate.py is mutmut with the bodies of `@operation` functions mutated
# too. About 20 minutes on 2 idle cores; narrow it, e.g. `make mutate MUTATE_MODULES="core.space"`.
MUTATE_MODULES ?= core activations ops topology export verify

mutate: $(STAMP)  ## mutation testing: kill rate per module (table as in docs/reliability.md)
	$(BIN)/pip install --quiet -c constraints.txt 'mutmut>=3.8,<4'
	rm -rf mutants
	CI=1 $(BIN)/python scripts/mutate.py run --max-children 2 $(foreach m,$(MUTATE_MODULES),"isoplastic.$(m).*")
	$(BIN)/python scripts/mutation_table.py

clean:
	rm -rf $(VENV) runs build *.egg-info mutants
