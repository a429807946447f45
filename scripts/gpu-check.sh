#!/usr/bin/env bash
# GPU check: serves the CNN benchmark model on cuda:0 and on the CPU, checks
# that their outputs agree, and prints infergate's throughput on the GPU at
# batch sizes 1, 8 and 64 next to ONNX Runtime called in-process on the same
# GPU (examples/ort_ceiling), with the ratio. Needs an NVIDIA GPU and driver.
#
#   bash scripts/gpu-check.sh        # DURATION=10s CONCURRENCY=16
#
# The CUDA build of ONNX Runtime comes from the onnxruntime-gpu wheel, and
# the CUDA 13 and cuDNN 9 runtime libraries it needs from NVIDIA's wheels
# (the wheel's [cuda,cudnn] extras, plus cuBLAS), all in the virtualenv
# .venv-gpu; nothing is installed system-wide. The GPU driver must support
# CUDA 13.
set -euo pipefail
cd "$(dirname "$0")/.."

ORT_VERSION=1.31.1
DURATION=${DURATION:-10s}
CONCURRENCY=${CONCURRENCY:-16}
PYTHON=${PYTHON:-python3}

command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
    || { echo "gpu-check: no NVIDIA driver (nvidia-smi) on this machine" >&2; exit 2; }

if [ ! -x .venv-gpu/bin/python ]; then
    "$PYTHON" -m venv .venv-gpu
fi
# The wheel's [cuda,cudnn] extras (CUDA 13) leave out cuBLAS, which its
# libonnxruntime_providers_cuda.so needs (libcublas.so.13, libcublasLt.so.13).
.venv-gpu/bin/python -m pip install --quiet "onnxruntime-gpu[cuda,cudnn]==${ORT_VERSION}" "nvidia-cublas~=13.0"
SITE=$(.venv-gpu/bin/python -c 'import site; print(site.getsitepackages()[0])')
export ORT_DYLIB_PATH="$SITE/onnxruntime/capi/libonnxruntime.so.${ORT_VERSION}"
[ -f "$ORT_DYLIB_PATH" ] || ORT_DYLIB_PATH=$(ls "$SITE"/onnxruntime/capi/libonnxruntime.so.* | head -1)
# The CUDA execution provider finds CUDA and cuDNN through the loader path.
LD_LIBRARY_PATH="$(ls -d "$SITE"/nvidia/*/lib 2>/dev/null | paste -sd: -)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export LD_LIBRARY_PATH
echo "gpu-check: ONNX Runtime (CUDA build) at $ORT_DYLIB_PATH"

cargo build --release --locked --workspace --bins --example ort_ceiling
BIN=target/release

# $work, the server PIDs ended on exit, free_port.
source benches/lib.sh
declare -A HTTP
for device in cuda:0 cpu; do
    repo="$work/repo-${device/:/}"
    mkdir -p "$repo"
    cp -r benches/models/cnn "$repo/"
    # On the GPU, a model that cannot use it must fail, not fall back.
    printf 'device = "%s"\nrequire_gpu = %s\nmax_batch_size = 64\n' "$device" \
        "$([ "$device" = cpu ] && echo false || echo true)" >"$repo/cnn/config.toml"
    HTTP[$device]=$(free_port)
    $BIN/infergate serve --model-repository "$repo" --poll-interval 0s --http-port "${HTTP[$device]}" \
        --grpc-port "$(free_port)" --metrics-port "$(free_port)" >"$work/$device.log" 2>&1 &
    pids+=($!)
done
for device in cuda:0 cpu; do
    for _ in $(seq 1 600); do
        curl -sf "http://127.0.0.1:${HTTP[$device]}/v2/health/ready" >/dev/null && break
        sleep 0.1
    done
    state=$(curl -s -X POST "http://127.0.0.1:${HTTP[$device]}/v2/repository/index")
    echo "$state" | grep -q '"READY"' || { echo "gpu-check: cnn did not load on $device: $state" >&2; cat "$work/$device.log" >&2; exit 1; }
done
curl -s "http://127.0.0.1:${HTTP[cuda:0]}/v2/models/cnn" | grep -q '"device":"cuda:0"' \
    || { echo "gpu-check: cnn is not running on cuda:0" >&2; exit 1; }

echo "== outputs on cuda:0 and on the CPU agree"
python3 - "${HTTP[cuda:0]}" "${HTTP[cpu]}" <<'PY'
import json, random, sys, urllib.request
random.seed(0)
data = [random.random() for _ in range(4 * 3 * 64 * 64)]
body = json.dumps({"inputs": [{"name": "input", "shape": [4, 3, 64, 64], "datatype": "FP32", "data": data}]}).encode()
def infer(port):
    r = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/cnn/infer", data=body,
                               headers={"Content-Type": "application/json"})
    return {o["name"]: o["data"] for o in json.load(urllib.request.urlopen(r))["outputs"]}
gpu, cpu = infer(sys.argv[1]), infer(sys.argv[2])
worst = max(abs(a - b) for name in cpu for a, b in zip(gpu[name], cpu[name]))
print(f"max |cuda - cpu| over {sum(len(v) for v in cpu.values())} outputs: {worst:.2e}")
sys.exit(0 if worst <= 1e-3 else 1)
PY

echo "== throughput on cuda:0: infergate (HTTP binary, concurrency $CONCURRENCY) vs ONNX Runtime in-process"
DEVICE=cuda:0 $BIN/examples/ort_ceiling benches/models/cnn/1/model.onnx 3 1,8,64 >"$work/ort.jsonl"
for batch in 1 8 64; do
    $BIN/loadtest --target "127.0.0.1:${HTTP[cuda:0]}" --protocol http-binary --model cnn --batch "$batch" \
        --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup 2s --json --quiet >"$work/lt-$batch.json"
done
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
ort = {o["batch"]: o for o in map(json.loads, open(f"{work}/ort.jsonl"))}
print(f"{'batch':>6}{'infergate rows/s':>18}{'ORT rows/s':>14}{'ratio':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
for batch in (1, 8, 64):
    r = json.load(open(f"{work}/lt-{batch}.json"))
    rows = r["qps"] * batch
    errors = sum(r["errors"].values())
    print(f"{batch:>6}{rows:>18.0f}{ort[batch]['rows_per_s']:>14.0f}{rows / ort[batch]['rows_per_s']:>8.3f}"
          f"{r['latency_us']['p50'] / 1e3:>9.2f}{r['latency_us']['p99'] / 1e3:>9.2f}{errors:>8}")
PY
