#!/usr/bin/env bash
# Instructions per request of two whole-server builds, by callgrind: the one
# request-path figure that repeats on a shared machine (timings here swing
# ±25 % from run to run). Each binary serves `tiny` under valgrind with
# window statistics off; h2load sends N1 then (fresh server) N2 gRPC requests
# at c=1; per request = (I(N2) - I(N1)) / (N2 - N1), so start-up cancels out.
#
#   A=old/infergate B=target/release/infergate bash benches/callgrind_ab.sh
#   N1=500 N2=2500 (defaults). Needs valgrind, h2load (nghttp2-client) and the
#   test venv (.venv, for the gRPC message): bash scripts/setup.sh --test.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${A:?the first binary}" "${B:?the second binary}"
N1=${N1:-500}; N2=${N2:-2500}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.ort/libonnxruntime.so.1.31.1}
for tool in valgrind h2load; do
    command -v $tool >/dev/null || { echo "$tool not found (apt-get install valgrind nghttp2-client)" >&2; exit 1; }
done
source benches/lib.sh
mkdir -p "$work/repo"
cp -r models/tiny "$work/repo/"
.venv/bin/python - "$work/tiny.grpc" <<'PY'
import sys
import numpy as np
from tritonclient.grpc import service_pb2
req = service_pb2.ModelInferRequest(model_name="tiny",
    inputs=[service_pb2.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[1, 16])],
    raw_input_contents=[(np.arange(16, dtype="<f4") / 4).tobytes()])
msg = req.SerializeToString()
open(sys.argv[1], "wb").write(b"\x00" + len(msg).to_bytes(4, "big") + msg)
PY
instructions() { # BINARY N -> total instructions of a server that answered N requests
    local http grpc pid
    http=$(free_port); grpc=$(free_port)
    valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$1" serve --model-repository "$work/repo" \
        --poll-interval 0s --stats-window 0s --http-port "$http" --grpc-port "$grpc" \
        --metrics-port "$(free_port)" >"$work/cg.log" 2>&1 &
    pid=$!
    for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$http/v2/health/ready" && break; sleep 0.5; done
    h2load -c1 -t1 -m1 -n "$2" -d "$work/tiny.grpc" -H 'content-type: application/grpc' -H 'te: trailers' \
        "http://127.0.0.1:$grpc/inference.GRPCInferenceService/ModelInfer" >"$work/h2.txt" 2>&1
    grep -q "$2 succeeded" "$work/h2.txt" || { echo "not every request succeeded: $(grep succeeded "$work/h2.txt")" >&2; exit 1; }
    kill -INT "$pid"; wait "$pid" || true
    grep -o "Collected : [0-9]*" "$work/cg.log" | awk '{print $3}'
}
declare -A per
for name in A B; do
    lo=$(instructions "${!name}" "$N1"); hi=$(instructions "${!name}" "$N2")
    per[$name]=$(( (hi - lo) / (N2 - N1) ))
    echo "$name ${!name}: $lo instructions at $N1 requests, $hi at $N2: ${per[$name]} per request"
done
echo "B/A per request: $(echo "${per[B]} / ${per[A]}" | bc -l | cut -c1-6)"
