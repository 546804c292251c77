# The README's commands. Each creates the environment first if it is missing or stale.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.acgs-installed
SANDBOX_DIR ?= .sandbox
REPORT_DIR ?= reports
PYTEST_ARGS ?=

.PHONY: demo test test-slow lint env clean report bench bench-backup

env: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || { \
	  echo "make: '$(PYTHON) -m venv' failed; on Debian install it with: apt-get install python3-venv" >&2; exit 1; }
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@# bytecode for the editable install, as a wheel install has it (start-up time; PYTHONDONTWRITEBYTECODE may be set)
	$(BIN)/python -m compileall -q acgs_verify checks >/dev/null
	$(BIN)/python -c "from acgs_verify.report.html import compile_template; compile_template()"
	@touch $@

# Start the sandbox, run every check against it, show where the reports are, stop the sandbox.
# It exits 0 when the run completed, whatever its verdict (the demo worked; its last line says what the verdict
# means), and with acgs-verify's own code when it could not run. Sandbox port = production port + offset.
SANDBOX_PORT_OFFSET ?= 10000
DEMO_ARGS ?=
demo: $(STAMP)
	@set -o pipefail; \
	trap '$(BIN)/acgs-verify sandbox down --dir $(SANDBOX_DIR) >/dev/null 2>&1' EXIT; \
	profile=$$($(BIN)/acgs-verify sandbox up --dir $(SANDBOX_DIR) --port-offset $(SANDBOX_PORT_OFFSET) | tail -n 1) \
	  || { echo "make demo: the sandbox did not start (see above); another port offset: make demo SANDBOX_PORT_OFFSET=20000" >&2; exit 3; }; \
	echo "sandbox up; profile: $$profile"; \
	$(BIN)/acgs-verify run --profile "$$profile" --report-dir $(REPORT_DIR) $(DEMO_ARGS); code=$$?; \
	case $$code in \
	  0) echo "make demo: the run completed: OK, every check passed against the sandbox (acgs-verify exit 0).";; \
	  1) echo "make demo: the run completed: WARNING, only P2/P3 checks failed (exit 1; see the FAIL lines above, on a busy machine often SYS-01/SYS-02 measuring its load); the demo worked.";; \
	  2) echo "make demo: the run completed: CRITICAL, a P0/P1 check failed (exit 2, which closes a gate; see the FAIL lines above and $(REPORT_DIR)/latest/report.html); the demo worked.";; \
	  *) echo "make demo: the run did not complete (acgs-verify exit $$code: could not run, see above)." >&2; exit $$code;; \
	esac

# The suite's own tests: real PostgreSQL, Redis, HTTP, sshd and TLS servers on loopback, started by the fixtures.
# TEST_WORKERS xdist workers, each with its own session sandbox on its own port offset; --dist loadscope keeps a
# module's tests (and its module-scoped servers) on one worker. TEST_WORKERS=0 runs them in this process.
# Two workers more than there are cores: a worker spends much of its time waiting for the servers and runs it
# started (2 cores, quiet machine, one run each with tests/conftest.py's scopes and order: 3 workers 190 s, 4
# workers 165 s; 6 workers took 211 s before them, each worker's session sandbox costing CPU the others wait for).
TEST_WORKERS ?= $(shell echo $$(( $$(nproc 2>/dev/null || echo 1) + 2 )))
# Scratch (tmp_path, the session sandboxes) on tmpfs where /dev/shm takes files and has room (a run peaks near
# 1 GiB; a container's default 64 MiB /dev/shm does not): on a VM's disk, creating the 100,000 files of one test
# took from 3 to 50 s of kernel time, on tmpfs under 1 s. TEST_TMPDIR= keeps $$TMPDIR.
TEST_TMPDIR ?= $(shell test -d /dev/shm && test -w /dev/shm && \
  [ "$$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 {print $$4}')" -ge 3145728 ] 2>/dev/null && echo /dev/shm)
# pytest keeps each test module with its asserts rewritten in __pycache__, unless PYTHONDONTWRITEBYTECODE is set (as
# on CI's machines): then every worker rewrote all the test modules and hypothesis at collection (about 4 s
# of CPU each), and every plain `pytest checks` a test starts rewrote checks/ and its plugins (1 s each). Written
# here once, by three collections at once, for all of them to read; pytest rewrites a module again when it changes.
ASSERTS_REWRITTEN := tests/__pycache__/.asserts-rewritten
TEST_MODULES := $(sort $(wildcard tests/test_*.py))
HALF := $(shell echo $$(( $(words $(TEST_MODULES)) / 2 )))
$(ASSERTS_REWRITTEN): $(STAMP) $(wildcard tests/*.py checks/*.py)
	@mkdir -p $(@D)
	@export -n PYTHONDONTWRITEBYTECODE; collect="$(BIN)/python -m pytest -q -p no:cacheprovider --collect-only"; \
	$$collect $(wordlist 1,$(HALF),$(TEST_MODULES)) >$(@D)/.collect-1.log 2>&1 & a=$$!; \
	$$collect $(wordlist $(shell echo $$(( $(HALF) + 1 ))),$(words $(TEST_MODULES)),$(TEST_MODULES)) \
	  >$(@D)/.collect-2.log 2>&1 & b=$$!; \
	ACGS_DB_PASSWORD=unused ACGS_REDIS_PASSWORD=unused $$collect checks --profile profiles/staging.yaml \
	  >$(@D)/.collect-3.log 2>&1 & c=$$!; \
	wait $$a && wait $$b && wait $$c || { tail -n 5 $(@D)/.collect-*.log >&2; exit 1; }
	@touch $@

test: $(STAMP) $(ASSERTS_REWRITTEN)
	$(if $(TEST_TMPDIR),TMPDIR=$(TEST_TMPDIR)) $(BIN)/python -m pytest tests -q -p no:cacheprovider -m "not slow" \
	  $(if $(filter-out 0,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadscope) $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest tests -q -p no:cacheprovider -m slow $(PYTEST_ARGS)

# The Allure HTML report of the latest run (allure-results/ is written by every run). The previous report's
# history/ goes into the run's results first: Allure's Trend and history widgets read it from there, and
# `generate --clean` would drop it with the old report.
report:
	@test -d $(REPORT_DIR)/latest/allure-results || { echo "make report: no run yet; run 'make demo' or acgs-verify run first" >&2; exit 1; }
	@if command -v allure >/dev/null; then \
	  results="$(REPORT_DIR)/latest/allure-results"; \
	  if [ -d "$(REPORT_DIR)/allure-report/history" ]; then \
	    rm -rf "$$results/history" && cp -R "$(REPORT_DIR)/allure-report/history" "$$results/history"; \
	  fi; \
	  allure generate --clean -o "$(REPORT_DIR)/allure-report" "$$results" && \
	  echo "Allure report: $(REPORT_DIR)/allure-report/index.html (allure open $(REPORT_DIR)/allure-report)"; \
	else \
	  echo "make report: the 'allure' command is not installed. It needs Java 8+; install it with one of:"; \
	  echo "  npm install -g allure-commandline"; \
	  echo "  brew install allure   (macOS)"; \
	  echo "  or unpack https://github.com/allure-framework/allure2/releases and put its bin/ on PATH"; \
	  echo "Meanwhile: $(REPORT_DIR)/latest/report.html is the same run as one self-contained page."; \
	fi

# acgs-verify against the runbook typed by hand (benchmarks/runbook.sh) on a sandbox of its own; writes the
# figures into BENCHMARKS.md. Not a test: minutes long, and its figures depend on the machine's load.
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

# a 1 GiB dump on a loopback ssh host verified there and streamed, against `ssh host gzip -t` (BENCHMARKS.md);
# apart from `bench`: it takes minutes and a GiB of /tmp
BENCH_BACKUP_ARGS ?= --keep
bench-backup: $(STAMP)
	$(BIN)/python benchmarks/verify_remote_backup.py $(BENCH_BACKUP_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check acgs_verify checks tests

clean:
	-$(BIN)/acgs-verify sandbox down --dir $(SANDBOX_DIR) 2>/dev/null
	rm -rf $(VENV) $(SANDBOX_DIR) reports/*/ reports/latest
