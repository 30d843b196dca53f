# Two commands on a fresh machine with Python 3.11: `make demo` and `make test`.
# Each creates the virtualenv .venv on first use.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): setup.py
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) on PATH (or make PYTHON=python3 ...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip setuptools wheel
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/segment-loops demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile tests

clean:
	rm -rf $(VENV) build dist *.egg-info dead-letter demo-output
