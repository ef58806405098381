# The two commands a newcomer needs: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTHON ?= python3

.PHONY: install demo test stack lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned (==2.13.0) in pyproject: pip takes the CPU wheel on this disk.
	$(PY) -m pip install -q -e '.[worker,plot,test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	VENV=$(VENV) scripts/demo.sh

test: $(STAMP)
	$(PY) -m pytest -q -rs

lint: $(STAMP)
	$(VENV)/bin/ruff check services shared tests benchmarks migrations

stack: $(STAMP)
	$(VENV)/bin/calib stack

bench: $(STAMP)
	$(PY) -m benchmarks.core

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
