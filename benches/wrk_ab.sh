#!/usr/bin/env bash
# Two infergate binaries side by side under a lean HTTP client (wrk), for a
# before/after check of a request-path change: both serve `tiny` on core 0
# at once, wrk (one thread) on core 1 sends the V2 JSON body of one row,
# alternating A B A B so drift on a shared machine hits both alike.
#
#   A=old/infergate B=target/release/infergate bash benches/wrk_ab.sh
#   CS="1 64" ROUNDS=4 DURATION=4s ...            (defaults: 1 8 64, 2, 4s)
# Needs wrk (Debian's `wrk` package). Prints one line per run.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${A:?the first binary}" "${B:?the second binary}"
CS=${CS:-1 8 64}; ROUNDS=${ROUNDS:-2}; DURATION=${DURATION:-4s}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.ort/libonnxruntime.so.1.31.1}
command -v wrk >/dev/null || { echo "wrk not found (apt-get install wrk)" >&2; exit 1; }

source benches/lib.sh
mkdir -p "$work/repo"
cp -r models/tiny "$work/repo/"
declare -A port
for name in A B; do
    port[$name]=$(free_port)
    start "$name" taskset -c 0 "${!name}" serve --model-repository "$work/repo" --poll-interval 0s \
        --http-port "${port[$name]}" --grpc-port "$(free_port)" --metrics-port "$(free_port)"
done
for name in A B; do
    wait_ready "http://127.0.0.1:${port[$name]}/v2/health/ready" "$name"
done
cat >"$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"inputs":[{"name":"input","shape":[1,16],"datatype":"FP32","data":[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16]}]}'
LUA
for c in $CS; do
    for round in $(seq 1 "$ROUNDS"); do
        for name in A B; do
            r=$(taskset -c 1 wrk -t1 -c"$c" -d"$DURATION" --latency -s "$work/post.lua" \
                "http://127.0.0.1:${port[$name]}/v2/models/tiny/infer" 2>&1)
            qps=$(awk '/Requests\/sec/ {print $2}' <<<"$r")
            p50=$(awk '$1=="50%" {print $2}' <<<"$r")
            bad=$(awk '/Non-2xx/ {print $4}' <<<"$r")
            echo "c=$c round=$round $name qps=$qps p50=$p50 non2xx=${bad:-0}"
        done
    done
done
