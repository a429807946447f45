#!/usr/bin/env bash
# Shedding under overload: the server's capacity (closed loop, c=64), then
# open loop at 0.8x and 2x of it, side by side in one run. At 2x, what is
# admitted should be served about as fast as at 0.8x, refusals should come
# back within a millisecond, and the QPS served should stay near capacity
# (issue 14's targets: admitted p99 <= 2x its p99 at 0.8x; refusals p99
# <= 1 ms; served >= 0.9x capacity). Server on core 0, loadtest on core 1.
#
#   bash benches/overload.sh            # MODEL=mlp DURATION=10s PROTOCOLS="grpc http-binary"
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-mlp}
DURATION=${DURATION:-10s}
PROTOCOLS=${PROTOCOLS:-grpc http-binary}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
OUT=${OUT:-target/overload/results.txt}

bash scripts/setup.sh >/dev/null
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.ort/libonnxruntime.so.1.31.1}
cargo build --release --locked --workspace --bins
BIN=target/release

source benches/lib.sh
mkdir -p "$work/repo" "$work/runs" "$(dirname "$OUT")"
cp -r models/tiny benches/models/mlp benches/models/cnn "$work/repo/"
HTTP=$(free_port); GRPC=$(free_port)
start server taskset -c "$SERVER_CPU" $BIN/infergate serve --model-repository "$work/repo" \
    --poll-interval 0s --http-port "$HTTP" --grpc-port "$GRPC" --metrics-port "$(free_port)"
wait_ready "http://127.0.0.1:$HTTP/v2/health/ready" server
SERVER_PID=${pids[0]}

load() { # NAME PROTOCOL ARGS... -> $work/runs/NAME.json
    local name=$1 protocol=$2 port
    shift 2
    [ "$protocol" = grpc ] && port=$GRPC || port=$HTTP
    taskset -c "$CLIENT_CPU" $BIN/loadtest --target "127.0.0.1:$port" --protocol "$protocol" \
        --model "$MODEL" --warmup 2s --json --quiet "$@" >"$work/runs/$name.json"
}
for protocol in $PROTOCOLS; do
    echo "   $MODEL $protocol: capacity (closed loop, c=64)" >&2
    load "$protocol-capacity" "$protocol" --concurrency 64 --duration "$DURATION"
    capacity=$(python3 -c "import json; print(json.load(open('$work/runs/$protocol-capacity.json'))['qps'])")
    for factor in 0.8 2; do
        rate=$(python3 -c "print(round($capacity * $factor))")
        echo "   $MODEL $protocol: open loop at ${factor}x = $rate req/s" >&2
        # Enough connections that requests wait in the server, not in the
        # client: an HTTP/1 connection carries one request at a time, an
        # HTTP/2 one at most --http2-max-streams.
        [ "$protocol" = grpc ] && conns=8 || conns=512
        load "$protocol-$factor" "$protocol" --rate "$rate" --duration "$DURATION" --connections "$conns" --max-inflight 20000
    done
done
kill -0 "$SERVER_PID" || { echo "the server died" >&2; exit 1; }
rss=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status")

python3 - "$work/runs" "$OUT" "$MODEL" "$PROTOCOLS" "$rss" <<'PY'
import json, sys
runs, out, model, protocols, rss = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(), int(sys.argv[5])
load = lambda n: json.load(open(f"{runs}/{n}.json"))
lines = [f"{'model / protocol / load':<30}{'due/s':>9}{'served/s':>10}{'p50 ms':>8}{'p99 ms':>8}{'refused':>9}{'ref p99 ms':>11}  errors"]
verdicts = []
for p in protocols:
    cap = load(f"{p}-capacity")
    rows = {"capacity": cap, "0.8x": load(f"{p}-0.8"), "2x": load(f"{p}-2")}
    for name, r in rows.items():
        e = r.get("error_latency_us") or {}
        refused = sum(r["errors"].values())
        lines.append(f"{model + ' ' + p + ' ' + name:<30}{r.get('rate') or 0:>9.0f}{r['qps']:>10.0f}"
                     f"{r['latency_us']['p50'] / 1000:>8.2f}{r['latency_us']['p99'] / 1000:>8.2f}{refused:>9}"
                     f"{e.get('p99', 0) / 1000:>11.2f}  {json.dumps(r['errors'])}")
    low, high = rows["0.8x"], rows["2x"]
    e = high.get("error_latency_us") or {}
    checks = [
        ("admitted p99 at 2x <= 2x its p99 at 0.8x", high["latency_us"]["p99"] <= 2 * low["latency_us"]["p99"]),
        ("refusals p99 <= 1 ms", e.get("p99", 0) <= 1000),
        ("served at 2x >= 0.9x capacity", high["qps"] >= 0.9 * cap["qps"]),
    ]
    for what, ok in checks:
        verdicts.append(f"{p}: {what}: {'met' if ok else 'MISSED'}")
lines += ["", *verdicts, f"server RSS after the runs: {rss / 1024:.0f} MiB"]
print("\n".join(lines))
open(out, "w").write("\n".join(lines) + "\n")
PY
