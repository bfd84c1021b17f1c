# webrtclab: the two commands are `make demo` and `make test`.
# Both create .venv and install what they need when it is missing.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OUT ?= out/demo
DURATION ?= 10
# Debian packages the tests need: Chromium for the browser-in-the-loop tests
# (driven by Playwright with executable_path, since Playwright cannot download here)
# and coturn for the TURN tests.
APT_PACKAGES ?= chromium coturn

.PHONY: demo test check lint typecheck pytest bench lab apt-deps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

apt-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

## The main job: a headless two-peer call; results in $(OUT)/
demo: $(STAMP)
	$(VENV)/bin/webrtclab demo --out $(OUT) --duration $(DURATION)

## Every test: lint, types, unit/integration tests and notebooks.
test: $(STAMP) apt-deps lint typecheck pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check webrtclab tests benchmarks
	$(VENV)/bin/ruff format --check webrtclab tests benchmarks

typecheck: $(STAMP)
	$(VENV)/bin/mypy

pytest: $(STAMP)
	$(PY) -m pytest -q -p nbval_plots tests notebooks --nbval --nbval-sanitize-with notebooks/nbval-sanitize.cfg

bench: $(STAMP)
	$(PY) benchmarks/run.py

## The lessons in JupyterLab (Chromium and coturn are needed by some of them).
lab: $(STAMP) apt-deps
	$(VENV)/bin/jupyter lab --ip=127.0.0.1 notebooks/

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
