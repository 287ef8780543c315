# The two commands the README promises: `make demo` and `make test`.
# Everything they need is installed here, into .venv, on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup test faults test-unit lint up down demo clean

$(BIN)/fab: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

# Everything the tests need, installed and started on a fresh machine (as root): Docker, BIND, Redis.
setup:
	bash docker/setup-engine.sh

# A skipped test fails `make test` (MASTOMIG_NO_SKIP, see tests/conftest.py): here nothing may be missing.
test: $(BIN)/fab setup
	MASTOMIG_NO_SKIP=1 $(BIN)/pytest -ra -m "not faults"

# The fault matrix: fab killed (or its connections dropped) at each step, on a fresh pair per case.
faults: $(BIN)/fab setup
	MASTOMIG_NO_SKIP=1 $(BIN)/pytest -ra -m faults tests/e2e/test_faults.py

test-unit: $(BIN)/fab
	$(BIN)/pytest -ra -m "not docker and not faults"

# ruff, configured in pyproject.toml: pyflakes, pycodestyle, isort and bugbear; tasks/ is also kept formatted.
lint: $(BIN)/fab
	$(BIN)/ruff check .
	$(BIN)/ruff format --check tasks fabfile.py

# `make up PROFILE=variant` (or PAIR_PROFILE=variant): the pair of common variants (docker/README.md)
up: $(BIN)/fab
	PAIR_PROFILE=$(or $(PROFILE),$(PAIR_PROFILE),default) $(BIN)/python docker/pair.py up

down: $(BIN)/fab
	$(BIN)/python docker/pair.py down

demo: $(BIN)/fab
	bash docker/setup-engine.sh
	$(BIN)/python docker/demo.py

clean: down
	rm -rf $(VENV) build logs
