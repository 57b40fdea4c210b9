# The two commands of the README: `make demo` and `make test`. Both set up what they need, idempotently.
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTHON ?= python3

PREFIX ?= /usr/local

.PHONY: demo test test-fast bench lint system-deps venv clean install man

demo: system-deps venv
	$(BIN)/backupctl demo

# Most tests wait on real processes (restic, Orthanc, RGW, the daemon), so three workers fit 2 cores;
# --dist loadfile keeps each file's session services (S3 servers, Orthanc) in one worker.
PYTEST_WORKERS ?= 3

test: system-deps venv
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile

test-fast: venv
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile -m "not slow"

bench: system-deps venv
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

lint: venv
	$(BIN)/ruff check .

# `backupctl` on the PATH: a symlink to the venv's entry point (the venv stays where it is). Idempotent.
install: venv
	@install -d $(DESTDIR)$(PREFIX)/bin
	@ln -sfn $(abspath $(BIN))/backupctl $(DESTDIR)$(PREFIX)/bin/backupctl
	@echo "$(DESTDIR)$(PREFIX)/bin/backupctl -> $(abspath $(BIN))/backupctl"

# The man page, generated from the command tree (`backupctl man`).
man: venv
	@mkdir -p man
	$(BIN)/backupctl man > man/backupctl.1.tmp && mv man/backupctl.1.tmp man/backupctl.1

system-deps:
	@scripts/install-system-deps.sh

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev,demo]'
	@touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info
