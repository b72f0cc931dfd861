# Two set-up-free entry points: `make demo` and `make test`. Each builds its own virtual environment.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cvtool-installed

.PHONY: demo test test-slow test-all venv clean bench

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# Without a GPU take torch's CPU build first (a bare `torch` pulls a CUDA build of several GB).
	@if ! command -v nvidia-smi >/dev/null 2>&1; then \
		$(PY) -m pip install -q $(if $(wildcard /opt/wheels),--find-links /opt/wheels) torch==2.13.0 || true; fi
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/cvtool demo

# the fast tier (<= 90 s on a 2-core machine, on both cores: pytest-xdist); end-to-end runs carry the `slow` marker
test: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

test-all: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
