# Two commands work on a fresh machine: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
MODEL ?= data/models/default
SCORED ?= data/out/eval_scored.csv
BENCH_DATA ?= ../shared/data
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test setup lint bench bench-quality bench-models clean

# The installer: uv (parallel downloads and installs) from PATH or put into the venv by pip;
# pip itself where uv cannot be had or fails. Both compile bytecode, as pip does by default.
pip_install = $(BIN)/python -m pip install --quiet
uv_install = "$$uv" pip install --quiet --compile-bytecode --python $(BIN)/python
install = uv=$$(command -v uv || echo $(BIN)/uv); \
	{ [ -x "$$uv" ] && $(uv_install) $(1); } \
	|| { $(pip_install) --upgrade pip && $(pip_install) $(1); }

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	command -v uv >/dev/null || $(BIN)/python -m pip install --quiet uv \
		|| echo "uv could not be installed: installing with pip (slower)"

# Two stamps, each redone only when the dependencies change: `make run` installs what running
# needs; `make test` and `lint` add the dev extra (pyspark, mypy, schema validators...) on top.
$(BIN)/.installed-run: pyproject.toml | $(BIN)/python
	$(call install,-e .)
	touch $@

# pyspark comes only as a source archive, and uv builds it again on every install, leaving ~1 GB
# in its cache each time (55 GB after a day of clean-clone CI runs here, until the disk was full):
# uv's own prune drops what no install uses any more, the newest build included in what it keeps.
$(BIN)/.installed-dev: $(BIN)/.installed-run
	$(call install,-e '.[dev]')
	-uv=$$(command -v uv || echo $(BIN)/uv); [ ! -x "$$uv" ] || "$$uv" cache prune --quiet
	touch $@

setup: $(BIN)/.installed-dev

# The demo model scores by the kNN distance in feature space (the library's default), which the
# network does not change: 30 epochs give the AUROC on data/eval.csv of the default 300 at each
# seed tried (0.9943 at seed 0) in about a quarter of the time. A likelihood score (--score
# elbo, recon_prob...) needs the library's defaults.
$(MODEL)/manifest.json: data/train.csv | $(BIN)/.installed-run
	$(BIN)/anomaly train data/train.csv --out $(MODEL) --epochs 30

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
	$(BIN)/python tests/benchmarks/bench_distance.py --data-dir $(BENCH_DATA) --study tails \
		--out tests/benchmarks/results/quality_tails
	$(BIN)/python tests/benchmarks/bench_series.py --data-dir $(BENCH_DATA) --study tails \
		--out tests/benchmarks/results/series_tails
	$(BIN)/python tests/benchmarks/bench_distance.py --join tests/benchmarks/results/quality_tails.json \
		tests/benchmarks/results/series_tails.json --out tests/benchmarks/results/tails_joint
	$(BIN)/python tests/benchmarks/bench_distance.py --data-dir $(BENCH_DATA) --study far \
		--out tests/benchmarks/results/quality_far
	$(BIN)/python tests/benchmarks/bench_series.py --data-dir $(BENCH_DATA) --study far \
		--out tests/benchmarks/results/series_far
	$(BIN)/python tests/benchmarks/bench_distance.py --join tests/benchmarks/results/quality_far.json \
		tests/benchmarks/results/series_far.json --out tests/benchmarks/results/far_joint
	$(BIN)/python tests/benchmarks/bench_distance.py --data-dir $(BENCH_DATA) --study logs \
		--out tests/benchmarks/results/quality_logs
	$(BIN)/python tests/benchmarks/bench_series.py --data-dir $(BENCH_DATA) --study logs \
		--out tests/benchmarks/results/series_logs
	$(BIN)/python tests/benchmarks/bench_distance.py --join tests/benchmarks/results/quality_logs.json \
		tests/benchmarks/results/series_logs.json --out tests/benchmarks/results/logs_joint

# Each --model through the same quality benchmark (15-40 min each on 2 cores), then which
# model wins which family (tests/benchmarks/results/models.md).
MODELS_BENCHED = iwae lsvae fae vae-svdd advae
bench-models: setup
	for m in $(MODELS_BENCHED); do \
		$(BIN)/python tests/benchmarks/bench_quality.py --data-dir $(BENCH_DATA) --max-epochs 100 \
			--param model=$$m --out tests/benchmarks/results/quality_$$m || exit 1; \
	done
	$(BIN)/python tests/benchmarks/compare_models.py

bench: setup bench-quality bench-models $(MODEL)/manifest.json
	$(BIN)/python tests/benchmarks/bench_series.py --data-dir $(BENCH_DATA)
	$(BIN)/python tests/benchmarks/bench_calendar.py --data-dir $(BENCH_DATA)
	$(BIN)/python tests/benchmarks/bench_scoring.py
	$(BIN)/python tests/benchmarks/bench_http.py
	$(BIN)/python tests/benchmarks/bench_request_cpu.py --model $(MODEL)
	$(BIN)/python tests/benchmarks/bench_liveness.py --model $(MODEL)
	$(BIN)/python tests/benchmarks/bench_streams.py
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
