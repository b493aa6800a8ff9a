# One entry point for set-up, tests, the demo and benchmarks. Every target installs what is missing first.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.tgdp-installed
# Set TGDP_NO_APT=1 to forbid `apt-get install ffmpeg` (the setup then fails with a message if ffmpeg is missing).
TGDP_NO_APT ?=
DEMO_DIR ?= runs/demo

.PHONY: setup ffmpeg test test-numerics test-gpu test-fast lint demo demo-s3 bench gpu-check reproduce reproduce-short confirm sweep wheel-check clean

setup: ffmpeg $(STAMP)

ffmpeg:
	@if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then \
	  if [ -z "$(TGDP_NO_APT)" ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    echo "[setup] installing ffmpeg with apt"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null; \
	  else \
	    echo "[setup] ffmpeg/ffprobe not found and apt is not allowed here: install ffmpeg and rerun" >&2; exit 1; \
	  fi; \
	fi

# Strict editable mode: a link tree of symlinks under build/ instead of an import hook, so that mypy, pyright and
# IDEs resolve `tgdp.*` to the repository's files. A link tree only knows the files that existed at install time,
# so the stamp also depends on the package folders (their mtime changes when a module is added or removed).
PKG_DIRS := $(wildcard core config store pipeline model train eval manifests experiments experiments/reproduce)
$(STAMP): pyproject.toml $(PKG_DIRS)
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' --config-settings editable_mode=strict
	@touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

# The tests most sensitive to float reduction order, at two intra-op thread counts, so that a tolerance that only
# holds on one machine shows up before it lands (.ci/run runs this after `make test`).
NUMERICS_TESTS := tests/train/test_train_ddp.py tests/model/test_model_losses.py tests/train/test_train_step.py
test-numerics: setup
	@for t in 1 2; do \
	  echo "[test-numerics] $$t intra-op thread(s)"; \
	  TGDP_TEST_THREADS=$$t OMP_NUM_THREADS=$$t $(BIN)/python -m pytest -q $(NUMERICS_TESTS) || exit 1; \
	done

# The CUDA tests (marker `gpu`) on this machine's first GPU; elsewhere they skip with the reason.
test-gpu: setup
	CUDA_VISIBLE_DEVICES=$${CUDA_VISIBLE_DEVICES:-0} $(BIN)/python -m pytest -q -m gpu

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

# ruff, then mypy over every public name of every package (tests/static/api_probe.py, from tests/static/probe.py).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m mypy tests/static/api_probe.py

demo: setup
	$(BIN)/python -m tgdp.experiments demo --out $(DEMO_DIR)

# The demo chain with the store in a local SeaweedFS bucket (dev extras): shard to s3://, train and embed from it.
demo-s3: setup
	$(BIN)/python -m tgdp.experiments demo-s3 --out runs/demo-s3 --set num_clips=40 --set train_steps=30 --set backend=serial

bench: setup
	$(BIN)/python -m benchmarks.run_all

# On a GPU machine (<= 8 min on one H100/H200): step, MFU, loader, a real run -> runs/gpu_check.json + BENCHMARKS.md.
gpu-check: setup
	$(BIN)/python -m benchmarks.gpu_check --out runs/gpu_check.json --md BENCHMARKS.md

reproduce: setup
	$(BIN)/python -m tgdp.experiments reproduce --out runs/reproduce

reproduce-short: setup
	$(BIN)/python -m tgdp.experiments reproduce --out runs/reproduce-short --short

# Pre-registered studies (REPRODUCTION.md): everything they run and decide is in the design file.
confirm: setup
	$(BIN)/python -m tgdp.experiments prereg --design experiments/reproduce/confirm.yaml --out runs/confirm

sweep: setup
	$(BIN)/python -m tgdp.experiments prereg --design experiments/reproduce/sweep.yaml --out runs/sweep

# Build the wheel, install it into a temporary venv sharing .venv's packages, import every module from it.
wheel-check: setup
	bash tests/wheel_check.sh $(BIN)/python

clean:
	rm -rf build dist *.egg-info runs/demo
