# The two commands of the README's quickstart:
#   make serve   set up, build, and serve models/ on 8000 (HTTP), 8001 (gRPC), 8002 (metrics)
#   make test    set up (ONNX Runtime library, Python test clients) and run every test
# Everything they need is installed by scripts/setup.sh; nothing by hand.

ORT_DYLIB_PATH ?= $(CURDIR)/.ort/libonnxruntime.so.1.31.1
export ORT_DYLIB_PATH
SERVE_ARGS ?= --model-repository models

.PHONY: setup setup-test setup-torch setup-fuzz build serve test test-rust test-python test-torch lint models torch-models bench compare peers stats-overhead gpu-check fuzz fuzz-cmin fuzz-smoke overload soak

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

test: setup-test lint test-rust test-python test-torch fuzz-smoke

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

# Shedding at 2x capacity; the soak (10 minutes; DURATION=60 for a short one).
overload: setup
	bash benches/overload.sh

soak: setup
	bash benches/soak.sh

# infergate beside the bare ceiling, Triton 2.51 and MLServer 1.7.1, one run (its own venv).
peers: setup
	bash benches/peers.sh

# On a machine with an NVIDIA GPU: the CNN on cuda:0 vs the CPU, and vs ONNX Runtime in-process.
gpu-check:
	bash scripts/gpu-check.sh

# QPS with window statistics on vs off, both servers loaded at once.
stats-overhead: setup
	bash benches/stats_overhead.sh

# libFuzzer targets (fuzz/), with cargo-fuzz 0.13.2 installed into .tools/ by
# `scripts/setup.sh --fuzz`, on the stable toolchain through RUSTC_BOOTSTRAP=1.
#   make fuzz        seeds (fuzz/seed.py), then each target for FUZZ_SECONDS (30),
#                    growing fuzz/corpus/<target>; make fuzz-cmin shrinks it again
#   make fuzz-smoke  what the test command runs: each target for
#                    FUZZ_SMOKE_SECONDS (20) from the committed corpus; new inputs
#                    go to a scratch folder, a crash or a hang (10 s) fails
FUZZ_TARGETS = http_infer grpc_infer compressed_body config_toml baseline_json feedback_body
FUZZ_SECONDS ?= 30
FUZZ_SMOKE_SECONDS ?= 20
CARGO_FUZZ = RUSTC_BOOTSTRAP=1 PATH="$(CURDIR)/.tools/bin:$$PATH" cargo fuzz

setup-fuzz:
	bash scripts/setup.sh --fuzz

fuzz: setup-test setup-fuzz
	.venv/bin/python fuzz/seed.py
	for t in $(FUZZ_TARGETS); do \
		$(CARGO_FUZZ) run -O -s none $$t -- -max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

fuzz-cmin: setup-fuzz
	for t in $(FUZZ_TARGETS); do $(CARGO_FUZZ) cmin -O -s none $$t || exit 1; done

fuzz-smoke: setup-fuzz
	$(CARGO_FUZZ) build -O -s none
	for t in $(FUZZ_TARGETS); do \
		scratch=$$(mktemp -d); \
		if ! $(CARGO_FUZZ) run -O -s none $$t $$scratch fuzz/corpus/$$t -- \
			-max_total_time=$(FUZZ_SMOKE_SECONDS) -timeout=10 -print_final_stats=1 >$$scratch.log 2>&1; then \
			tail -60 $$scratch.log; exit 1; \
		fi; \
		echo "fuzz-smoke $$t: $$(grep -h 'stat::number_of_executed_units' $$scratch.log | tr -s ' ')"; \
		rm -rf $$scratch $$scratch.log; \
	done
