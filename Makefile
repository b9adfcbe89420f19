# minigate — `make run` starts the gateway, `make test` runs the whole suite (SQLite and PostgreSQL).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN_STAMP  := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test simulate bench lint install install-test demo clean assets screenshots

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	$(BIN)/python -m minigate.console.assets    # the console's charting library, from the npm registry
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	$(BIN)/python -m minigate.console.assets
	touch $@ $(RUN_STAMP)

install: $(RUN_STAMP)

assets: | $(BIN)/python
	$(BIN)/python -m minigate.console.assets

install-test: $(TEST_STAMP)

run: $(RUN_STAMP)
	$(BIN)/minigate serve

demo: $(RUN_STAMP)
	$(BIN)/minigate demo

test: $(TEST_STAMP)
	scripts/test.sh

# the console's screenshots in docs/console/ (docs/console.md), taken by its browser tests
screenshots: $(TEST_STAMP)
	MINIGATE_SCREENSHOTS_DIR=docs/console $(BIN)/python -m pytest -p no:cacheprovider -q tests/console -k browser

# long simulation runs (A-15): make simulate SEEDS=1000 [STEPS=150] [SIM_ARGS=--backend postgres]
SEEDS ?= 100
STEPS ?= 150
simulate: $(TEST_STAMP)
	$(BIN)/python -m tests.simulation --seeds $(SEEDS) --steps $(STEPS) $(SIM_ARGS)

# benchmarks (bench/README.md): quick sizes, SQLite and PostgreSQL; make bench BENCH_ARGS="--full"
bench: $(TEST_STAMP)
	$(BIN)/python -m pip install -q -r bench/requirements.txt
	$(BIN)/python -m bench all $(BENCH_ARGS)

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/mypy src/minigate
	$(BIN)/python -m pip install -q pip-audit
	$(BIN)/pip-audit --skip-editable --progress-spinner off   # known vulnerabilities in the installed dependencies

clean:
	rm -rf $(VENV) .minigate .pytest_cache
