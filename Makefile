# `make demo` and `make test` each build .venv from scratch if it is missing.
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean results

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/slimfg demo

test: $(STAMP)
	$(BIN)/ruff check slimfg tests benchmarks scripts examples
	$(BIN)/ruff format --check slimfg tests benchmarks scripts examples
	$(BIN)/pytest
	$(BIN)/pytest -m breadth -n 2 -q

lint: $(STAMP)
	$(BIN)/ruff check --fix slimfg tests benchmarks scripts examples
	$(BIN)/ruff format slimfg tests benchmarks scripts examples

clean:
	rm -rf $(VENV) runs .pytest_cache

# docs/results.md from benchmarks/results/*.json (run the benchmarks first; see docs/results.md)
results: $(STAMP)
	$(BIN)/python benchmarks/report.py
