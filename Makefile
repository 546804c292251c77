# The README's commands. Each creates the environment first if it is missing or stale.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.acgs-installed
SANDBOX_DIR ?= .sandbox
PYTEST_ARGS ?=

.PHONY: demo test test-slow lint env clean

env: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "make: '$(PYTHON) -m venv' failed; on Debian install it with: apt-get install python3-venv" >&2; exit 1; }
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $@

# Start the sandbox, run every check against it, show where the reports are, stop the sandbox.
demo: $(STAMP)
	@set -o pipefail; \
	trap '$(BIN)/acgs-verify sandbox down --dir $(SANDBOX_DIR) >/dev/null 2>&1' EXIT; \
	profile=$$($(BIN)/acgs-verify sandbox up --dir $(SANDBOX_DIR) | tail -n 1) || exit 3; \
	echo "sandbox up; profile: $$profile"; \
	$(BIN)/acgs-verify run --profile "$$profile" --report-dir reports

# The suite's own tests: real PostgreSQL, Redis, HTTP, sshd and TLS servers on loopback, started by the fixtures.
test: $(STAMP)
	$(BIN)/python -m pytest tests -q -p no:cacheprovider -m "not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest tests -q -p no:cacheprovider -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check acgs_verify checks tests

clean:
	-$(BIN)/acgs-verify sandbox down --dir $(SANDBOX_DIR) 2>/dev/null
	rm -rf $(VENV) $(SANDBOX_DIR) reports/*/ reports/latest
