# The two commands of the README:  `make run`  and  `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1

.PHONY: install sysdeps swift run test test-fast bench up down status deploy

# torch is installed first and pinned to the CPU build (2.13.0); constraints.txt pins the rest,
# so a new machine resolves the same versions without backtracking.
$(BIN)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[stack,dev]'
	touch $@

install: $(BIN)/.installed

# Headless Chromium renders the HTML report in a test; installed when we are root (CI).
sysdeps:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || echo "chromium not installed: the report rendering test will be skipped"

# The S3-compatible store (OpenStack Swift + s3api) lives in its own venv under .infra/.
SWIFT_STAMP := .infra/venv-swift/.sidn-installed
$(SWIFT_STAMP): infra/swift-requirements.txt infra/install-swift.sh
	infra/install-swift.sh
swift: $(SWIFT_STAMP)

up: install swift
	infra/up
down:
	infra/down
# The scheduled retraining (prefect.yaml) on the `make up` Prefect server; its process worker runs it
# in this folder (the deployment's pull step holds this folder's path, written at deploy time).
deploy: install
	infra/with-env $(BIN)/prefect --no-prompt deploy --all
status:
	infra/status

# Stages call `python`: put the venv first on PATH. With `make up` running, data and
# artifacts go to the local object store (infra/with-env loads .infra/env.sh if present), and
# infra/repro-and-push follows a successful `dvc repro` with `dvc push` when a default DVC
# remote is configured (a line says the push was skipped when none is).
run: install
	PATH="$(abspath $(BIN)):$$PATH" infra/with-env infra/repro-and-push
	@echo; sed '/^## Per defect/,$$d' reports/summary.md
	@echo "report: reports/index.html   metrics: $(BIN)/dvc metrics show   runs: $(BIN)/mlflow ui --backend-store-uri sqlite:///mlflow.db"

test: install sysdeps swift
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow and not integration"

bench: install
	$(BIN)/sidn bench
