# Two commands work on a fresh machine: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODEL ?= data/models/default
SCORED ?= data/out/eval_scored.csv
BENCH_DATA ?= ../shared/data
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test setup lint bench bench-quality clean

# Reinstall only when the dependencies change.
$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/.installed

$(MODEL)/manifest.json: data/train.csv | $(BIN)/.installed
	$(BIN)/anomaly train data/train.csv --out $(MODEL)

# The main job: train on the bundled data if no model exists, score the evaluation file,
# measure the detector against its labels, then serve the model over HTTP (Ctrl-C stops).
run: $(MODEL)/manifest.json
	$(BIN)/anomaly score $(MODEL) data/eval.csv --output $(SCORED) \
		--keep-column label --keep-column anomaly_kind
	$(BIN)/anomaly evaluate $(MODEL) data/eval.csv --label-column label --by-column anomaly_kind
	$(BIN)/anomaly serve --model default=$(MODEL) --host $(HOST) --port $(PORT)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

# Detection quality of the default on every labelled family at once, with kNN and
# IsolationForest in the same run (about 20 min on 2 cores; --quick for a smoke run).
bench-quality: setup
	$(BIN)/python tests/benchmarks/bench_quality.py --data-dir $(BENCH_DATA) --max-epochs 100 \
		--out tests/benchmarks/results/quality
	$(BIN)/python tests/benchmarks/bench_distance.py --data-dir $(BENCH_DATA) \
		--out tests/benchmarks/results/quality_distance
	$(BIN)/python tests/benchmarks/bench_distance.py --data-dir $(BENCH_DATA) --study banks \
		--out tests/benchmarks/results/quality_banks

bench: setup bench-quality
	$(BIN)/python tests/benchmarks/bench_scoring.py
	$(BIN)/python tests/benchmarks/bench_http.py
	$(BIN)/python tests/benchmarks/bench_batch.py --spark
	$(BIN)/python tests/benchmarks/bench_advae.py --data-dir $(BENCH_DATA) \
		--models vae,vae-svdd,advae --paper-hyperparameters \
		--out tests/benchmarks/results/advae_all_models
	$(BIN)/python tests/benchmarks/bench_adbench.py --data-dir $(BENCH_DATA) --max-epochs 100 \
		--out tests/benchmarks/results/adbench_all_models
	$(BIN)/python tests/benchmarks/bench_servers.py --data-dir $(BENCH_DATA)
	$(BIN)/python tests/benchmarks/bench_sample_count.py --data-dir $(BENCH_DATA)

clean:
	rm -rf $(VENV) data/models data/out .pytest_cache .mypy_cache .ruff_cache
