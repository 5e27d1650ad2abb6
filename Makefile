# Entry points. Each target sets up what it needs: a fresh clone only needs python3 and make.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
SYSSTAMP := $(VENV)/.system-deps
BENCHSTAMP := $(VENV)/.bench-deps
PIP_VERSION := 26.3

.PHONY: help venv system-deps lint test demo bench constraints clean

help:
	@echo "make demo   - three virtual nodes -> gateway -> live view and web page (no hardware needed)"
	@echo "make test   - lint, then the whole test suite (sets up .venv and system packages first)"
	@echo "make lint   - ruff over the tree (rules and complexity limit in pyproject.toml)"
	@echo "make bench  - benchmarks; figures go to docs/performance.md"

# Debian's python3 makes venvs only with python3-venv installed: without ensurepip, the system
# packages (that one included) come first.
$(STAMP): pyproject.toml constraints.txt
	@$(PY) -m venv --help >/dev/null 2>&1 && $(PY) -m ensurepip --version >/dev/null 2>&1 \
	  || PY=$(PY) bash scripts/install-system-deps
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet 'pip==$(PIP_VERSION)'
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

venv: $(STAMP)

# Debian packages the tests use as real peers (mosquitto, libcoap's coap-client).
$(SYSSTAMP): scripts/install-system-deps
	PY=$(PY) bash scripts/install-system-deps
	@mkdir -p $(VENV) && touch $@

system-deps: $(SYSSTAMP)

# The lint gate: a finding fails the build (CI runs make test), before the suite's minutes.
lint: $(STAMP)
	$(BIN)/ruff check .

# Tests run in parallel (pytest-xdist): most of them wait on a MicroPython process, a pty or a
# socket, so more workers than cores pays. Handed out one or two at a time (--maxschedchunk 1),
# so a worker never queues many tests behind a slow one. TEST_WORKERS=0 runs them in one process.
TEST_WORKERS ?= 6

test: lint $(SYSSTAMP)
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist load --maxschedchunk 1

demo: $(STAMP)
	$(BIN)/fieldnode demo $(ARGS)

$(BENCHSTAMP): $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[test,bench]'
	touch $@

# constraints.txt pins every package (direct and indirect) that the venv holds; --all keeps setuptools,
# which the wheel test builds with.
constraints: $(BENCHSTAMP)
	{ sed -n '1,2p' constraints.txt; $(BIN)/pip freeze --all --exclude-editable | grep -v '^fieldnode'; } > constraints.new
	mv constraints.new constraints.txt

bench: $(BENCHSTAMP) $(SYSSTAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
