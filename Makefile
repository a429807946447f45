# The two commands of the README's quickstart:
#   make serve   set up, build, and serve models/ on 8000 (HTTP), 8001 (gRPC), 8002 (metrics)
#   make test    set up (ONNX Runtime library, Python test clients) and run every test
# Everything they need is installed by scripts/setup.sh; nothing by hand.

ORT_DYLIB_PATH ?= $(CURDIR)/.ort/libonnxruntime.so.1.31.1
export ORT_DYLIB_PATH
SERVE_ARGS ?= --model-repository models

.PHONY: setup setup-test setup-torch build serve test test-rust test-python test-torch lint models torch-models bench compare peers stats-overhead gpu-check fuzz

# The `torch` feature builds and runs against the CPU-only libtorch that
# `scripts/setup.sh --torch` assembles in .libtorch/ from PyPI wheels.
TORCH_ENV = LIBTORCH=$(CURDIR)/.libtorch LIBTORCH_CXX11_ABI=1 LD_LIBRARY_PATH=$(CURDIR)/.libtorch/lib

setup:
	bash scripts/setup.sh

setup-test:
	bash scripts/setup.sh --test

build: setup
	cargo build --release --locked

serve: build
	./target/release/infergate serve $(SERVE_ARGS)

lint:
	cargo fmt --all -- --check
	cargo clippy --locked --workspace --all-targets -- -D warnings

test-rust: setup
	cargo test --locked --workspace

# The compatibility suite drives target/debug/infergate; `cargo test
# --no-run` builds it with the same features as the Rust tests (a plain
# `cargo build` would unify features differently and rebuild dependencies).
test-python: setup-test
	cargo test --locked --workspace --no-run
	.venv/bin/python -m pytest tests/python -q

setup-torch:
	bash scripts/setup.sh --torch

# The TorchScript backend: clippy and every test again with the feature on.
test-torch: setup-torch setup-test
	$(TORCH_ENV) cargo clippy --locked --workspace --all-targets --features torch -- -D warnings
	$(TORCH_ENV) cargo test --locked --workspace --features torch

# Regenerates tests/models/tiny_ts (TorchScript, traced with tch).
torch-models: setup-torch
	$(TORCH_ENV) cargo run --locked --features torch --example make_torchscript

test: setup-test lint test-rust test-python test-torch

# Regenerates models/ and the test fixtures (needs scikit-learn and onnx;
# the generated files are committed, so serving and testing never do).
models:
	python3 -m venv .venv-models
	.venv-models/bin/pip install --quiet -r scripts/requirements-models.txt
	.venv-models/bin/python scripts/make_models.py --check

# Criterion benchmarks of the request path (decode, encode, batching, in-process infer).
bench: setup
	cargo bench --locked --bench hot_path

# infergate against its ceilings, side by side (see the README's Performance section).
compare: setup
	bash benches/compare.sh

# infergate beside the bare ceiling, Triton 2.51 and MLServer 1.7.1, one run (its own venv).
peers: setup
	bash benches/peers.sh

# On a machine with an NVIDIA GPU: the CNN on cuda:0 vs the CPU, and vs ONNX Runtime in-process.
gpu-check:
	bash scripts/gpu-check.sh

# QPS with window statistics on vs off, both servers loaded at once.
stats-overhead: setup
	bash benches/stats_overhead.sh

# libFuzzer targets (fuzz/): seeds from fuzz/seed.py, then each target for
# FUZZ_SECONDS (default 30). Needs `cargo install cargo-fuzz`; runs on the
# stable toolchain through RUSTC_BOOTSTRAP=1.
FUZZ_SECONDS ?= 30
fuzz: setup-test
	.venv/bin/python fuzz/seed.py
	for t in http_infer grpc_infer compressed_body config_toml baseline_json feedback_body; do \
		RUSTC_BOOTSTRAP=1 cargo fuzz run -O -s none $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done
