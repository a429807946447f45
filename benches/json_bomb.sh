#!/usr/bin/env bash
# What one oversized JSON request costs the server: a 40 MB body of 20
# million numbers for tiny's [1, 16] input, sent once to each binary given
# (default: the release build), with the answer, its time and the server's
# peak RSS (VmHWM) before and after. The answer must be a 400 naming the
# count; time and memory should stay near what the body itself takes.
#
#   bash benches/json_bomb.sh [BINARY...]      # N=20000000
set -euo pipefail
cd "$(dirname "$0")/.."
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.ort/libonnxruntime.so.1.31.1}
N=${N:-20000000}
[ $# -gt 0 ] || set -- target/release/infergate
source benches/lib.sh
mkdir -p "$work/repo"
cp -r models/tiny "$work/repo/"
python3 -c "
import sys
sys.stdout.write('{\"inputs\":[{\"name\":\"input\",\"shape\":[1,16],\"datatype\":\"FP32\",\"data\":[' + ','.join(['0'] * $N) + ']}]}')" >"$work/body.json"
echo "body: $(stat -c %s "$work/body.json") bytes, $N numbers"
for bin in "$@"; do
    http=$(free_port)
    start server "$bin" serve --model-repository "$work/repo" --poll-interval 0s --http-port "$http" \
        --grpc-port "$(free_port)" --metrics-port "$(free_port)"
    pid=${pids[-1]}
    wait_ready "http://127.0.0.1:$http/v2/health/ready" server
    before=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    took=$(curl -s -o "$work/answer.json" -w '%{http_code} %{time_total}' --data-binary @"$work/body.json" \
        "http://127.0.0.1:$http/v2/models/tiny/infer")
    after=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
    echo "$bin: HTTP ${took% *} in ${took#* } s; peak RSS $((before / 1024)) -> $((after / 1024)) MiB; $(head -c 120 "$work/answer.json")"
    kill "$pid"; wait "$pid" 2>/dev/null || true
done
