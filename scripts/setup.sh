#!/usr/bin/env bash
# Sets up what infergate needs on a fresh Debian machine with Rust and Python 3:
#   - the ONNX Runtime shared library, extracted from the onnxruntime wheel on
#     PyPI into .ort/ (the server loads it at start-up; ORT_DYLIB_PATH points
#     elsewhere if you have your own);
#   - with --test: a virtualenv .venv with the pinned Python test clients
#     (tritonclient, pytest), and Prometheus from Debian's `prometheus`
#     package, unpacked into .prometheus/ (dpkg-deb -x: nothing installed
#     system-wide, no service started) for the scrape test, and Debian's
#     chromium and chromium-driver, docker.io and haproxy (apt-get: root or
#     sudo) for the page's browser tests and the Swarm test;
#   - with --fuzz: cargo-fuzz, pinned, in .tools/ (make fuzz, make fuzz-smoke);
#   - with --torch: a CPU-only libtorch in .libtorch/ (the `torch` feature).
# Idempotent: what is already in place is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.31.1
ORT_LIB=".ort/libonnxruntime.so.${ORT_VERSION}"
PYTHON=${PYTHON:-python3}

if [ ! -f "$ORT_LIB" ]; then
    echo "setup: fetching onnxruntime==${ORT_VERSION} and extracting its shared library into .ort/"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "onnxruntime==${ORT_VERSION}"
    mkdir -p .ort
    "$PYTHON" - "$tmp" "$ORT_LIB" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/onnxruntime-*.whl")[0]
member = "onnxruntime/capi/" + sys.argv[2].split("/")[-1]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(sys.argv[2] + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
    mv "$ORT_LIB.part" "$ORT_LIB"
fi

if [ "${1:-}" = "--test" ] || [ "${2:-}" = "--test" ]; then
    if [ ! -x .venv/bin/python ] || ! cmp -s scripts/requirements-test.txt .venv/.requirements-test.txt; then
        echo "setup: creating .venv with the pinned test clients"
        "$PYTHON" -m venv .venv
        .venv/bin/python -m pip install --quiet -r scripts/requirements-test.txt
        cp scripts/requirements-test.txt .venv/.requirements-test.txt
    fi
    PROMETHEUS=.prometheus/usr/bin/prometheus
    if [ ! -x "$PROMETHEUS" ]; then
        echo "setup: fetching Debian's prometheus package and unpacking it into .prometheus/"
        deb=$(mktemp -d)
        SUDO=""
        [ "$(id -u)" -eq 0 ] || SUDO=sudo
        if ! (cd "$deb" && apt-get download prometheus >/dev/null 2>&1); then
            # A fresh machine has no package lists yet.
            $SUDO apt-get update -qq
            (cd "$deb" && apt-get download prometheus >/dev/null)
        fi
        mkdir -p .prometheus
        dpkg-deb -x "$deb"/prometheus_*.deb .prometheus
        rm -rf "$deb"
    fi
    echo "setup: Prometheus at $PROMETHEUS ($("$PROMETHEUS" --version 2>&1 | head -1))"
    # System packages from Debian (root or sudo): Chromium and its
    # ChromeDriver for the page's browser tests (tests/python/test_ui.py);
    # Docker Engine and haproxy for the Swarm test (tests/python/test_swarm.py,
    # which starts and ends its own daemon: none is left running here).
    missing=()
    for need in /usr/bin/chromium:chromium /usr/bin/chromedriver:chromium-driver \
        /usr/sbin/dockerd:docker.io /usr/sbin/haproxy:haproxy; do
        [ -x "${need%%:*}" ] || missing+=("${need##*:}")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "setup: installing Debian's ${missing[*]}"
        SUDO=""
        [ "$(id -u)" -eq 0 ] || SUDO=sudo
        if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; then
            $SUDO apt-get update -qq
            $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
        fi
    fi
    echo "setup: $(/usr/bin/chromium --version 2>/dev/null | head -1) with $(/usr/bin/chromedriver --version | cut -d' ' -f1-2)"
    echo "setup: $(/usr/sbin/dockerd --version), $(/usr/sbin/haproxy -v | head -1 | cut -d' ' -f1-3)"
fi
if [ "${1:-}" = "--fuzz" ] || [ "${2:-}" = "--fuzz" ]; then
    # cargo-fuzz, pinned, into .tools/ (not ~/.cargo): `make fuzz-smoke`
    # puts .tools/bin first on PATH.
    CARGO_FUZZ_VERSION=0.13.2
    if ! .tools/bin/cargo-fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
        echo "setup: installing cargo-fuzz $CARGO_FUZZ_VERSION into .tools/"
        cargo install --quiet --locked --root .tools cargo-fuzz --version "$CARGO_FUZZ_VERSION"
    fi
    echo "setup: $(.tools/bin/cargo-fuzz --version) at .tools/bin"
fi
if [ "${1:-}" = "--torch" ] || [ "${2:-}" = "--torch" ]; then
    # libtorch 2.13.0 for the `torch` feature, CPU only, from PyPI wheels:
    # torch==2.13.0 is a CUDA 13 build. On a machine without a GPU, its
    # libtorch_cpu.so needs only libcudart.so.13 and libcupti.so.13 (two small
    # NVIDIA wheels), while its libtorch.so pulls in libtorch_cuda.so and the
    # whole CUDA stack: so keep torch_cpu + c10, replace libtorch.so by a stub
    # that links just those, and leave libtorch_cuda.so out (torch-sys would
    # link it if present). The wheels (540 MB) are cached outside the clone,
    # in ~/.cache/infergate/wheels, for later runs on the same machine.
    LIBTORCH_DIR=.libtorch
    WHEELS="${XDG_CACHE_HOME:-$HOME/.cache}/infergate/wheels"
    if [ ! -f "$LIBTORCH_DIR/lib/libtorch_cpu.so" ]; then
        echo "setup: building a CPU-only libtorch 2.13.0 in $LIBTORCH_DIR from the torch wheel"
        mkdir -p "$WHEELS"
        "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: -d "$WHEELS" \
            torch==2.13.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85
        x=$(mktemp -d)
        unzip -q -o "$WHEELS"/torch-2.13.0-*.whl 'torch/include/*' 'torch/lib/libtorch_cpu.so' \
            'torch/lib/libc10.so' 'torch/lib/libgomp.so.1' -d "$x"
        unzip -q -o "$WHEELS"/nvidia_cuda_runtime-13.0.96-*.whl 'nvidia/cu13/lib/libcudart.so.13' -d "$x"
        unzip -q -o "$WHEELS"/nvidia_cuda_cupti-13.0.85-*.whl 'nvidia/cu13/lib/libcupti.so.13' -d "$x"
        rm -rf "$LIBTORCH_DIR.part" && mkdir -p "$LIBTORCH_DIR.part/lib"
        mv "$x/torch/include" "$LIBTORCH_DIR.part/include"
        cp "$x"/torch/lib/{libtorch_cpu.so,libc10.so,libgomp.so.1} "$x"/nvidia/cu13/lib/{libcudart.so.13,libcupti.so.13} \
            "$LIBTORCH_DIR.part/lib/"
        ln -sf libgomp.so.1 "$LIBTORCH_DIR.part/lib/libgomp.so"
        echo '/* CPU-only libtorch.so: torch_cpu and c10, without libtorch_cuda.so */' >"$x/stub.c"
        gcc -shared -fPIC -o "$LIBTORCH_DIR.part/lib/libtorch.so" "$x/stub.c" -Wl,-soname,libtorch.so \
            -Wl,--no-as-needed -L"$LIBTORCH_DIR.part/lib" -ltorch_cpu -lc10
        echo 2.13.0 >"$LIBTORCH_DIR.part/build-version"
        rm -rf "$x" "$LIBTORCH_DIR"
        mv "$LIBTORCH_DIR.part" "$LIBTORCH_DIR"
    fi
    echo "setup: libtorch (CPU) at $LIBTORCH_DIR: build with LIBTORCH=$PWD/$LIBTORCH_DIR, run with LD_LIBRARY_PATH=$PWD/$LIBTORCH_DIR/lib"
fi
echo "setup: ONNX Runtime library at $ORT_LIB"
