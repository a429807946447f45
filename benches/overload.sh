#!/usr/bin/env bash
# Shedding under overload: the server's capacity (closed loop, c=64), then
# open loop at 0.8x and 2x of it, side by side in one run, against two
# servers: one as shipped (queues bounded by --queue-capacity, 1024
# requests) and one tuned for online traffic on a shared core ($TIGHT,
# default "--max-queue-wait 5ms --inference-nice 10": refused once the
# work queued would take 5 ms to drain; inference threads yield the core
# to the I/O thread). At 2x, what is
# admitted should be served about as fast as at 0.8x, refusals should come
# back within a millisecond, and the QPS served should stay near capacity
# (issue 14's targets: admitted p99 <= 2x its p99 at 0.8x; refusals p99
# <= 1 ms; served >= 0.9x capacity). Servers on core 0, loadtest on core 1.
# Latencies count from when a request was due; "lag p99" is how late the
# client itself sent (its share of every figure); "rtt p99" is a refusal's
# round trip from when it went out, the server's share, which the 1 ms
# target is about.
# The default model is the CNN: its runs, not the protocol, bound its
# capacity, so one client core can offer it twice what it serves (for
# `tiny` or `mlp` loadtest itself saturates first).
#
#   bash benches/overload.sh            # MODEL=cnn DURATION=10s PROTOCOLS="grpc http-binary" TIGHT="..." 
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-cnn}
TIGHT=${TIGHT:---max-queue-wait 5ms --inference-nice 10}
DURATION=${DURATION:-10s}
PROTOCOLS=${PROTOCOLS:-grpc http-binary}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
OUT=${OUT:-target/overload/results.txt}

bash scripts/setup.sh >/dev/null
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.ort/libonnxruntime.so.1.31.1}
# IG_BIN: a saved server binary to measure instead of building this tree.
[ -n "${IG_BIN:-}" ] || cargo build --release --locked --workspace --bins
BIN=target/release
IG_BIN=${IG_BIN:-$BIN/infergate}

source benches/lib.sh
mkdir -p "$work/repo" "$work/runs" "$(dirname "$OUT")"
cp -r models/tiny benches/models/mlp benches/models/cnn "$work/repo/"
# "default": as shipped; "tight": with a latency budget.
declare -A HTTP GRPC PID
for config in default tight; do
    HTTP[$config]=$(free_port); GRPC[$config]=$(free_port)
    extra=()
    # shellcheck disable=SC2206 # the flags split on purpose
    [ "$config" = tight ] && extra=($TIGHT)
    start "server-$config" taskset -c "$SERVER_CPU" "$IG_BIN" serve --model-repository "$work/repo" \
        --poll-interval 0s "${extra[@]}" --http-port "${HTTP[$config]}" --grpc-port "${GRPC[$config]}" \
        --metrics-port "$(free_port)"
    PID[$config]=${pids[-1]}
    wait_ready "http://127.0.0.1:${HTTP[$config]}/v2/health/ready" "server-$config"
done

load() { # NAME CONFIG PROTOCOL ARGS... -> $work/runs/NAME.json
    local name=$1 config=$2 protocol=$3 port
    shift 3
    [ "$protocol" = grpc ] && port=${GRPC[$config]} || port=${HTTP[$config]}
    taskset -c "$CLIENT_CPU" $BIN/loadtest --target "127.0.0.1:$port" --protocol "$protocol" \
        --model "$MODEL" --warmup 2s --json --quiet "$@" >"$work/runs/$name.json"
}
for protocol in $PROTOCOLS; do
    echo "   $MODEL $protocol: capacity (closed loop, c=64, as shipped)" >&2
    load "$protocol-capacity" default "$protocol" --concurrency 64 --duration "$DURATION"
    capacity=$(python3 -c "import json; print(json.load(open('$work/runs/$protocol-capacity.json'))['qps'])")
    for config in default tight; do
        for factor in 0.8 2; do
            rate=$(python3 -c "print(round($capacity * $factor))")
            echo "   $MODEL $protocol ($config): open loop at ${factor}x = $rate req/s" >&2
            # Enough connections that requests wait in the server, not in the
            # client: an HTTP/1 connection carries one request at a time, an
            # HTTP/2 one at most --http2-max-streams.
            [ "$protocol" = grpc ] && conns=8 || conns=512
            load "$protocol-$config-$factor" "$config" "$protocol" --rate "$rate" --duration "$DURATION" \
                --connections "$conns" --max-inflight 20000
        done
    done
done
for config in default tight; do
    kill -0 "${PID[$config]}" || { echo "the $config server died" >&2; exit 1; }
done
rss=$(awk '/VmRSS/ {print $2}' "/proc/${PID[default]}/status")

python3 - "$work/runs" "$OUT" "$MODEL" "$PROTOCOLS" "$rss" "$TIGHT" <<'PY'
import json, sys
runs, out, model, protocols, rss, tight = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(), int(sys.argv[5]), sys.argv[6]
load = lambda n: json.load(open(f"{runs}/{n}.json"))
lines = [f"{'model / protocol / queue bound / load':<40}{'due/s':>9}{'served/s':>10}{'p50 ms':>8}{'p99 ms':>8}{'refused':>9}{'ref p50':>8}{'ref p99':>8}{'rtt p99':>8}{'lag p99':>8}  errors"]
verdicts = []
def row(name, r):
    e = r.get("error_latency_us") or {}
    t = r.get("error_round_trip_us") or {}
    refused = sum(r["errors"].values())
    lines.append(f"{name:<40}{r.get('rate') or 0:>9.0f}{r['qps']:>10.0f}"
                 f"{r['latency_us']['p50'] / 1000:>8.2f}{r['latency_us']['p99'] / 1000:>8.2f}{refused:>9}"
                 f"{e.get('p50', 0) / 1000:>8.2f}{e.get('p99', 0) / 1000:>8.2f}{t.get('p99', 0) / 1000:>8.2f}{r['send_lag_us']['p99'] / 1000:>8.2f}  {json.dumps(r['errors'])}")
for p in protocols:
    cap = load(f"{p}-capacity")
    row(f"{model} {p} capacity", cap)
    for config, bound in (("default", "shipped"), ("tight", "tuned")):
        low, high = load(f"{p}-{config}-0.8"), load(f"{p}-{config}-2")
        row(f"{model} {p} {bound} 0.8x", low)
        row(f"{model} {p} {bound} 2x", high)
        e = high.get("error_round_trip_us") or {}
        checks = [
            (f"admitted p99 at 2x <= 2x its p99 at 0.8x ({high['latency_us']['p99'] / 1000:.2f} vs {low['latency_us']['p99'] / 1000:.2f} ms)",
             high["latency_us"]["p99"] <= 2 * low["latency_us"]["p99"]),
            (f"refusals p99 <= 1 ms, from when sent ({e.get('p99', 0) / 1000:.2f} ms)", e.get("p99", 0) <= 1000),
            (f"served at 2x >= 0.9x capacity ({high['qps'] / cap['qps']:.2f}x)", high["qps"] >= 0.9 * cap["qps"]),
            (f"nothing but refusals failed", all(k in ("grpc_Unavailable", "grpc_ResourceExhausted", "http_503", "http_429") for k in high["errors"])),
        ]
        for what, ok in checks:
            verdicts.append(f"{p}, {bound}: {what}: {'met' if ok else 'MISSED'}")
lines += ["", f"shipped: --queue-capacity 1024 (the defaults); tuned: {tight}", "", *verdicts, f"server RSS after the runs: {rss / 1024:.0f} MiB"]
print("\n".join(lines))
open(out, "w").write("\n".join(lines) + "\n")
PY
