# ManiFlow runtime: the two newcomer commands are `make demo` and `make test`.
# Both bootstrap first (idempotent; everything is cached in ignored folders).

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.bootstrap-$(shell sha256sum tests/requirements.txt | cut -c1-12)
export PIP_CACHE_DIR := $(CURDIR)/.cache/pip
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: bootstrap demo test bench bench-train fixtures clean-venv

## Install what a fresh machine lacks: a local venv with ONNX Runtime, libtorch (torch wheel), onnx, numpy.
bootstrap: $(STAMP)

$(STAMP): tests/requirements.txt
	@echo "bootstrap: creating $(VENV) and installing tests/requirements.txt (first run downloads ~3 GB; cached after)"
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -r tests/requirements.txt
	@# An ONNX Runtime that is too old, for the test of the runtime's refusal (never on any search path).
	$(VENV)/bin/pip install --no-deps --target .cache/onnxruntime-too-old onnxruntime==1.22.1
	@rm -f $(VENV)/.bootstrap-*
	@touch $@

## The main job on the embedded default: the simulated SO-101 (`maniflow sim`) and the
## robot node (`maniflow run`) with the bundled policy, over zenoh on loopback, for 20 s.
demo: bootstrap
	cargo build --release -p maniflow-runtime --bin maniflow
	@mkdir -p runs
	@target/release/maniflow sim --duration 30s --quiet --stats-json runs/demo-sim.json & sim=$$!; \
	target/release/maniflow run --config launch/so101.toml --duration 20s --stats-json runs/demo-stats.json; rc=$$?; \
	kill -INT $$sim 2>/dev/null; wait $$sim 2>/dev/null; \
	echo "final stats (runs/demo-stats.json):"; cat runs/demo-stats.json; echo; exit $$rc

## The full test suite (Rust workspace + fixture consistency check in Python).
test: bootstrap
	$(VENV)/bin/python models/fixtures/make_fixtures.py --check
	$(VENV)/bin/python tests/launch/test_launch_xml.py
	cargo test --workspace

## Latency benchmark of the fixture ManiFlow package at N = 1 and N = 2 (release build).
bench: bootstrap
	cargo build --release -p maniflow-runtime --bin maniflow
	target/release/maniflow bench models/fixtures/tiny-maniflow --steps 1 --iters 1000
	target/release/maniflow bench models/fixtures/tiny-maniflow --steps 2 --iters 1000
	target/release/maniflow bench models/fixtures/tiny-act --iters 1000
	target/release/maniflow transport-bench

## Trainer throughput: so101-cpu (batch 64) and upstream-image (batch 8) training steps/s,
## each next to the PyTorch reference model timed in the same run (ratio and peak RSS).
bench-train: bootstrap
	cargo build --workspace --bins   # dev profile: dependencies (libtorch calls) optimised
	target/debug/maniflow-train bench --config so101-cpu --batch 64 --steps 10 --threads 2 --reference
	target/debug/maniflow-train bench --config upstream-image --batch 8 --steps 2 --threads 2 --reference

## Regenerate the fixture packages (changes their sha256 if torch changes).
fixtures: bootstrap
	$(VENV)/bin/python models/fixtures/make_fixtures.py

clean-venv:
	rm -rf $(VENV)
