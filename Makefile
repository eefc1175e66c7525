# byeline: two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint sipp test-deps venv clean

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

# What the tests need from Debian beyond SIPp: a PostgreSQL server (the store on
# PostgreSQL) and Chromium (the dashboard in a headless browser).
test-deps: sipp
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

demo: $(STAMP) sipp
	$(VENV)/bin/byeline demo

LINT_DIRS := $(wildcard src tests bench fuzz scripts)

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_DIRS)
	$(VENV)/bin/ruff format --check $(LINT_DIRS)
	$(VENV)/bin/mypy

# The REQUIRE variables turn "not installed" skips into failures: a missing install
# step must fail CI, not pass it quietly.
test: $(STAMP) test-deps lint
	BYELINE_REQUIRE_PG=1 BYELINE_REQUIRE_BROWSER=1 $(VENV)/bin/pytest -q

bench: $(STAMP) sipp
	$(PY) bench/run.py
	$(PY) bench/plot.py bench/out/report.json -o bench/out/capacity-media.svg
	$(PY) bench/handback.py --runs 2 --json bench/out/handback.json
	$(PY) bench/speech.py --json bench/out/speech.json
	$(PY) bench/srtp_cost.py --calls 200 --seconds 5

clean:
	rm -rf $(VENV) build *.egg-info
