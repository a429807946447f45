#!/usr/bin/env bash
# What the prediction log costs: QPS of infergate logging every request
# (`[log] sample_rate = 1`, Parquet, inputs and outputs) against the same
# server without a log, side by side: both servers pinned to one core (the
# log's writer thread included) and loaded at the same moment, the load
# generators on the other core — as benches/stats_overhead.sh does.
# Target (issue 13): on / off >= 0.95 for digits and mlp.
#
#   bash benches/log_overhead.sh               # DURATION=5s ROUNDS=3
# One row per request, concurrency 64; loadtest sends no ids, so the
# server makes one per request (UUIDv7), as it does for every client.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
ROUNDS=${ROUNDS:-3}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
CONCURRENCY=${CONCURRENCY:-64}
OUT=${OUT:-target/log_overhead/results.txt}

bash scripts/setup.sh >/dev/null
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.ort/libonnxruntime.so.1.31.1}
cargo build --release --locked --workspace --bins
BIN=target/release

source benches/lib.sh
mkdir -p "$work/runs" "$work/logs" "$(dirname "$OUT")"
for mode in on off; do
    mkdir -p "$work/repo-$mode"
    cp -r models/digits benches/models/mlp "$work/repo-$mode/"
done
for model in digits mlp; do
    # Files rotate as they would in production (100 000 records each).
    printf '\n[log]\nsample_rate = 1.0\n' >>"$work/repo-on/$model/config.toml"
done

declare -A HTTP GRPC
for mode in on off; do
    HTTP[$mode]=$(free_port); GRPC[$mode]=$(free_port)
    start "$mode" taskset -c "$SERVER_CPU" $BIN/infergate serve --model-repository "$work/repo-$mode" \
        --poll-interval 0s --http-port "${HTTP[$mode]}" --grpc-port "${GRPC[$mode]}" \
        --metrics-port "$(free_port)" --prediction-log-dir "$work/logs"
done
for mode in on off; do
    wait_ready "http://127.0.0.1:${HTTP[$mode]}/v2/health/ready" "$mode"
done

for round in $(seq 1 "$ROUNDS"); do
    for model in digits mlp; do
        for protocol in grpc http-binary; do
            echo "   $model $protocol log on + off together (round $round)" >&2
            gen=()
            for mode in on off; do
                [ "$protocol" = grpc ] && port=${GRPC[$mode]} || port=${HTTP[$mode]}
                taskset -c "$CLIENT_CPU" $BIN/loadtest --target "127.0.0.1:$port" --protocol "$protocol" \
                    --model "$model" --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup "$WARMUP" \
                    --json --quiet >"$work/runs/$model-$protocol-$mode-$round.json" &
                gen+=($!)
            done
            wait "${gen[@]}"
        done
    done
done

python3 - "$work" "$OUT" <<'PY'
import glob, json, os, statistics, sys
work, out = sys.argv[1], sys.argv[2]
runs = {}
for path in glob.glob(f"{work}/runs/*.json"):
    rest, _round = os.path.basename(path)[:-5].rsplit("-", 1)
    rest, mode = rest.rsplit("-", 1)
    model, protocol = rest.split("-", 1)
    runs.setdefault((model, protocol, mode), []).append(json.load(open(path)))
ok = True
errors = 0
lines = [f"{'model / protocol':<24}{'log on':>12}{'log off':>12}{'on/off':>9}  target >= 0.95"]
for model in ["digits", "mlp"]:
    for protocol in ["grpc", "http-binary"]:
        on = statistics.median(r["qps"] for r in runs[(model, protocol, "on")])
        off = statistics.median(r["qps"] for r in runs[(model, protocol, "off")])
        errors += sum(sum(r["errors"].values()) for m in ("on", "off") for r in runs[(model, protocol, m)])
        met = on / off >= 0.95
        ok &= met
        lines.append(f"{model + ' ' + protocol:<24}{on:>12.0f}{off:>12.0f}{on / off:>9.3f}  {'met' if met else 'MISSED'}")
files = glob.glob(f"{work}/logs/*/*.parquet") + glob.glob(f"{work}/logs/*/*.part")
lines.append(f"\nlog files: {len(files)}, {sum(os.path.getsize(f) for f in files) / 2**20:.1f} MiB")
lines.append(f"failed requests across all runs: {errors}; all met: {ok}")
print("\n".join(lines))
open(out, "w").write("\n".join(lines) + "\n")
PY
