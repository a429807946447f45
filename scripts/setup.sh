#!/usr/bin/env bash
# Sets up what infergate needs on a fresh Debian machine with Rust and Python 3:
#   - the ONNX Runtime shared library, extracted from the onnxruntime wheel on
#     PyPI into .ort/ (the server loads it at start-up; ORT_DYLIB_PATH points
#     elsewhere if you have your own);
#   - with --test: a virtualenv .venv with the pinned Python test clients
#     (tritonclient, pytest), and Prometheus from Debian's `prometheus`
#     package, unpacked into .prometheus/ (dpkg-deb -x: nothing installed
#     system-wide, no service started) for the scrape test.
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

if [ "${1:-}" = "--test" ]; then
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
fi
echo "setup: ONNX Runtime library at $ORT_LIB"
