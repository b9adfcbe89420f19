# minigate — `make run` starts the gateway, `make test` runs the whole suite (SQLite and PostgreSQL).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN_STAMP  := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

.PHONY: run test lint install install-test demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@ $(RUN_STAMP)

install: $(RUN_STAMP)

install-test: $(TEST_STAMP)

run: $(RUN_STAMP)
	$(BIN)/minigate serve

demo: $(RUN_STAMP)
	$(BIN)/minigate demo

test: $(TEST_STAMP)
	scripts/test.sh

lint: $(TEST_STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/mypy src/minigate

clean:
	rm -rf $(VENV) .minigate .pytest_cache
