# `make demo` and `make test` each build .venv from scratch if it is missing.
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LITERT := .venv-litert

.PHONY: demo test test-breadth lint clean results

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# LiteRT cannot share .venv with executorch: its own environment, layered on .venv
$(LITERT)/.installed: $(STAMP)
	$(BIN)/python scripts/litert_env.py $(LITERT)
	touch $@

demo: $(STAMP)
	$(BIN)/slimfg demo

# One pytest session runs the suite and the breadth_ci part of the support contract. Each
# test goes to whichever worker is free, except tests/test_benchmarks.py's, which share one
# fixture and so one worker (tests/conftest.py's scheduler). slimfg.launch runs it with the
# glibc malloc tunables the `slimfg` command sets for itself (slimfg/launch.py).
test: $(STAMP) $(LITERT)/.installed
	$(BIN)/ruff check slimfg tests benchmarks scripts examples
	$(BIN)/ruff format --check slimfg tests benchmarks scripts examples
	$(BIN)/python -m slimfg.launch $(BIN)/pytest -n 2 --dist loadgroup -m 'not breadth or breadth_ci'
	$(LITERT)/bin/python -m pytest -q tests/test_tflite.py

# the support contract over every torchvision model and timm family (about 20 minutes)
test-breadth: $(STAMP)
	$(BIN)/pytest -m breadth -n 2 -q

lint: $(STAMP)
	$(BIN)/ruff check --fix slimfg tests benchmarks scripts examples
	$(BIN)/ruff format slimfg tests benchmarks scripts examples

clean:
	rm -rf $(VENV) $(LITERT) runs .pytest_cache

# docs/results.md from benchmarks/results/*.json (run the benchmarks first; see docs/results.md)
results: $(STAMP)
	$(BIN)/python benchmarks/report.py
