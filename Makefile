# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint venv bench fuzz clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[cli,test,tensorboard]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/isoplastic train --out runs/demo

test: $(STAMP)
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

clean:
	rm -rf $(VENV) runs build *.egg-info
