# The two commands of the README: `make demo` and `make test`. Both set up what they need, idempotently.
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTHON ?= python3

.PHONY: demo test test-fast bench lint system-deps venv clean

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

system-deps:
	@scripts/install-system-deps.sh

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev,demo]'
	@touch $(STAMP)

clean:
	rm -rf $(VENV) build *.egg-info
