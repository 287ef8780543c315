# The two commands the README promises: `make demo` and `make test`.
# Everything they need is installed here, into .venv, on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: setup test faults test-unit lint up down demo bench clean

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

# Benchmarks, on demand (not in `make test`): fresh pairs, JSON into bench/results/, then bench/RESULTS.md.
# PARTS=failover, tool or basebackup runs one part; REPEATS=N failover runs per method (5 by default, fewer
# for a quick look); SIZES the seed sizes of the scale figures; SAMPLES the proxy's requests; BACKUPS the
# SEED_SIZE:SEED_TEXT_BYTES of the base backup A/B (medium:10000 is about 2 GB) and ROUNDS its rounds (even,
# so that each side goes first in half of them).
REPEATS ?= 5
SIZES ?= small,medium,5000
SAMPLES ?= 200
BACKUPS ?= medium:180,medium:10000
ROUNDS ?= 4
bench: $(BIN)/fab setup
	$(BIN)/python -m bench $(PARTS) --repeats $(REPEATS) --sizes $(SIZES) --samples $(SAMPLES) \
		--backups $(BACKUPS) --rounds $(ROUNDS)

clean: down
	rm -rf $(VENV) build logs
