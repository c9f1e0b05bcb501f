# Two commands on a fresh machine: `make demo` and `make test`. Both set up first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= build/demo
DEMO_SPARSITY ?= 0.9

.PHONY: setup demo test clean

setup: $(VENV)/.installed

# torch first (the CPU wheel on local disk), then the project with one onnxruntime build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[cpu,test]"
	touch $@

demo: setup
	$(PY) -m cli.demo --output $(DEMO_DIR) --sparsity $(DEMO_SPARSITY)

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build .pytest_cache
