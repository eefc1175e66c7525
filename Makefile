# byeline: two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint sipp venv clean

venv: $(STAMP)

# Idempotent bootstrap: the venv is (re)built only when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# SIPp (Debian's sip-tester) is the independent SIP peer of the tests and the demo.
sipp:
	@command -v sipp >/dev/null 2>&1 || { \
	  echo "installing sip-tester (SIPp) with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq sip-tester >/dev/null; }

demo: $(STAMP) sipp
	$(VENV)/bin/byeline demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

test: $(STAMP) sipp lint
	$(VENV)/bin/pytest -q

bench: $(STAMP) sipp
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) build *.egg-info
