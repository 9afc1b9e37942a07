# The two commands of the quick start: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
RUN_DIR ?= var/run
BIND ?= 127.0.0.1:8080

.PHONY: install run test lint typecheck unit bench bench-poll bench-scale bench-publish bench-hostile fuzz clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	RUN_DIR=$(RUN_DIR) BIND=$(BIND) PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/run-demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck unit

bench-poll: $(STAMP)
	$(BIN)/python bench/poll.py $(BENCH_ARGS)

bench-scale: $(STAMP)
	$(BIN)/python bench/scale.py $(BENCH_ARGS)

bench-publish: $(STAMP)
	$(BIN)/python bench/publish_memory.py $(BENCH_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-hostile: $(STAMP)
	$(BIN)/python bench/hostile.py $(BENCH_ARGS)

fuzz: $(STAMP)
	$(BIN)/python bench/fuzz.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache .hypothesis
