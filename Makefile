# byeline: two commands on a fresh machine: `make demo` and `make test`.
# The interpreter the venv is made from: the distribution's own CPython when it is 3.11 or newer,
# else python3 on PATH. Debian's /usr/bin/python3 is an optimised, statically linked build; a
# CPython built from source with the defaults (pyenv's, here: no --enable-optimizations, libpython
# as a shared library) ran byeline's call path 1.25x slower (docs/PERFORMANCE.md, round 22).
PYTHON ?= $(shell for p in /usr/bin/python3 python3; do \
  $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# A venv made from another interpreter than $(PYTHON) (an older checkout's) is made again.
REAL_EXECUTABLE := import os, sys; print(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
ifneq ($(wildcard $(PY)),)
ifneq ($(shell $(PY) -c '$(REAL_EXECUTABLE)'),$(shell $(PYTHON) -c '$(REAL_EXECUTABLE)'))
REMAKE_VENV := 1
.PHONY: $(STAMP)
endif
endif

.PHONY: demo test bench lint sipp test-deps venv clean native clean-native native-deps

venv: $(STAMP)

# Idempotent bootstrap: the venv is (re)built only when pyproject.toml or constraints.txt
# changes, or when it was made from another interpreter (REMAKE_VENV above). constraints.txt holds the versions the tests last passed with, so a fresh machine
# installs that same set, not whatever the index holds that day.
$(STAMP): pyproject.toml constraints.txt
	@test -n "$(PYTHON)" || { echo "no Python 3.11 or newer: install python3 (3.11+)"; exit 1; }
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { \
	  echo "installing python3-venv with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
	$(if $(REMAKE_VENV),@echo "making $(VENV) again from $(PYTHON)"; rm -rf $(VENV))
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The call path compiled with mypyc (src/byeline/_native.py lists the modules): rebuilt when
# one of its sources changes.  A failed build stops make; `make clean-native` goes back to pure
# Python (slower); `make test` requires the compiled modules.
NATIVE_SOURCES := $(shell sed -n 's/^    "byeline\.\(.*\)",$$/\1/p' src/byeline/_native.py \
  | tr . / | sed 's#^#src/byeline/#; s#$$#.py#')
NATIVE_STAMP := build/native.stamp

native: $(NATIVE_STAMP)

$(NATIVE_STAMP): $(STAMP) $(NATIVE_SOURCES) src/byeline/_native.py scripts/native.py
	@$(MAKE) --no-print-directory native-deps
	$(PY) scripts/native.py
	@mkdir -p build && touch $@

# A C compiler and the headers of the venv's Python (Debian: gcc, python3-dev).
native-deps:
	@command -v cc >/dev/null 2>&1 || { \
	  echo "installing gcc with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc >/dev/null; }
	@test -f "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" || { \
	  echo "installing python3-dev with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-dev >/dev/null; }

clean-native:
	$(PY) scripts/native.py --clean
	rm -f $(NATIVE_STAMP)

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

demo: $(STAMP) native sipp
	$(VENV)/bin/byeline demo

LINT_DIRS := $(wildcard src tests bench fuzz scripts)

lint: $(STAMP)
	$(VENV)/bin/ruff check $(LINT_DIRS)
	$(VENV)/bin/ruff format --check $(LINT_DIRS)
	$(VENV)/bin/mypy

# The REQUIRE variables turn "not installed" skips into failures: a missing install
# step must fail CI, not pass it quietly.
test: $(STAMP) native test-deps lint
	BYELINE_REQUIRE_PG=1 BYELINE_REQUIRE_BROWSER=1 BYELINE_REQUIRE_NATIVE=1 $(VENV)/bin/pytest -q

bench: $(STAMP) native sipp
	$(PY) bench/run.py
	$(PY) bench/plot.py bench/out/report.json -o bench/out/capacity-media.svg
	$(PY) bench/handback.py --runs 1 --json bench/out/handback.json
	$(PY) bench/speech.py --json bench/out/speech.json
	$(PY) bench/srtp_cost.py --calls 200 --seconds 2

clean:
	test ! -x $(PY) || $(PY) scripts/native.py --clean
	rm -rf $(VENV) build *.egg-info
