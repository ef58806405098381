# The two commands a newcomer needs: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTHON ?= python3

.PHONY: install demo test test-fast stack lint format bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned (==2.13.0) in pyproject: pip takes the CPU wheel on this disk.
	$(PY) -m pip install -q -e '.[worker,plot,test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	VENV=$(VENV) scripts/demo.sh

# Everything: the engine, the API in-process, and the real API and workers as processes (e2e).
# TEST_PROCESSES pytest processes (pytest-xdist), each test module whole in one of them: the e2e
# tests mostly wait on their processes (leases, retries, slow clients), so more processes than
# cores fill the waits. On these two cores, fresh clone: three processes 625 s, two 693 s, once the
# embedded broker stopped spending CPU on idle polls (before that, with the cores the limit, three
# took as long as two: 861 s against 849 s).
# --no-loadscope-reorder: modules in the order tests/e2e/conftest.py sorts them, longest first.
TEST_PROCESSES ?= 3
test: $(STAMP)
	$(PY) -m pytest -q -rs -n $(TEST_PROCESSES) --dist loadfile --no-loadscope-reorder

# The edit loop: every test that starts no process, in TEST_PROCESSES pytest processes (some of its
# tests wait on timers: three fill those waits). Its times on the two-core CI machines, embedded
# and with CALIB_TEST_POSTGRES_URL / _REDIS_URL set (both backends): README, "Developing".
test-fast: $(STAMP)
	$(PY) -m pytest -q -rs -n $(TEST_PROCESSES) -m "not e2e"

LINTED := services shared tests benchmarks migrations

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy

format: $(STAMP)
	$(VENV)/bin/ruff format $(LINTED)
	$(VENV)/bin/ruff check --fix $(LINTED)

stack: $(STAMP)
	$(VENV)/bin/calib stack

bench: $(STAMP)
	$(PY) -m benchmarks.core

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
