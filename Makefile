# Two commands on a fresh machine: `make demo` and `make test`. Both set up first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= build/demo
DEMO_RUNS ?= 10

.PHONY: setup demo train-demo test wheel clean

setup: $(VENV)/.installed

# torch first (the CPU wheel on local disk), then the project with one onnxruntime build and
# every extra (export, train, bench, test); a deployment needs only `pip install ".[cpu]"`.
$(VENV)/.installed: pyproject.toml $(wildcard runtime/native/*.txt runtime/native/src/*)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[cpu,export,train,bench,test]"
	touch $@

# Export the SMP-pruned MiniLM shipped in checkpoints/ (every variant, validated), then measure
# it against the dense model with smp-bench.
demo: setup
	$(PY) -m cli.demo --output $(DEMO_DIR)
	$(VENV)/bin/smp-bench $(DEMO_DIR)/minilm-smp-s-0.10-* --batch 32 --seq-len 128 --runs $(DEMO_RUNS) \
		-o $(DEMO_DIR)/bench

# Reproduce the shipped checkpoint: SMP-S at 10% keep on BBC News (~10 minutes on 2 cores).
train-demo: setup
	OMP_NUM_THREADS=1 $(PY) benchmarks/train_bbc.py --rows smp-s-0.10 --ship checkpoints/minilm-bbc-smp-s-keep0.10

test: setup
	$(PY) -m pytest -q

# A wheel with the ai.smp library inside, for machines without a compiler (README "Install").
wheel: setup
	$(PY) -m pip wheel . --no-deps -w dist

clean:
	rm -rf $(VENV) build dist .pytest_cache

# Issue #17's peers suite: the peer runtimes (openvino + nncf into the venv beside its pins,
# DeepSparse in build/deepsparse-venv), then benchmarks/peers.py (PEERS_ARGS=--quick: a short run).
PEERS_ARGS ?=

.PHONY: peers-setup peers

peers-setup: setup
	bash benchmarks/peers_setup.sh $(VENV)

peers: peers-setup
	$(PY) benchmarks/peers.py $(PEERS_ARGS)
