#!/usr/bin/env bash
# Side-by-side benchmark of infergate against its ceilings, in one run:
#   overhead: infergate vs. the bare ceiling (bare-ceiling: the same protocol
#             stack answering `tiny` with plain arithmetic), gRPC and HTTP
#             binary, concurrency 1, 8, 64;
#   compute:  infergate serving `mlp` and `cnn` vs. their compute ceiling
#             1 / (1/bare_qps + 1/ort_best_rows_per_s), where ort_best is ONNX
#             Runtime called in-process at its best batch size with one thread.
# The servers are pinned to one core and the load generator to the other
# (taskset), and infergate and the ceiling are measured alternately (A B A B)
# so that drift on a shared machine hits both alike. Ratios, not absolute
# times, are the result.
#
#   bash benches/compare.sh                  # DURATION=5s ROUNDS=2 by default
#   DURATION=10s ROUNDS=3 bash benches/compare.sh
#   IG_BIN=/tmp/infergate-before bash benches/compare.sh   # another build of infergate
#                                             # (a request-path change's "before")
# Writes the table to stdout and everything measured to $OUT (default
# target/compare/results.json).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
ROUNDS=${ROUNDS:-2}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
OUT=${OUT:-target/compare/results.json}

bash scripts/setup.sh >/dev/null
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.ort/libonnxruntime.so.1.31.1}
cargo build --release --locked --workspace --bins --example ort_ceiling
BIN=target/release
IG_BIN=${IG_BIN:-$BIN/infergate}

source benches/lib.sh
mkdir -p "$work/repo" "$work/runs" "$(dirname "$OUT")"
cp -r models/tiny benches/models/mlp benches/models/cnn "$work/repo/"

IG_HTTP=$(free_port); IG_GRPC=$(free_port); IG_METRICS=$(free_port)
BARE_HTTP=$(free_port); BARE_GRPC=$(free_port)

start infergate taskset -c "$SERVER_CPU" "$IG_BIN" serve --model-repository "$work/repo" --poll-interval 0s \
    --http-port "$IG_HTTP" --grpc-port "$IG_GRPC" --metrics-port "$IG_METRICS"
start bare taskset -c "$SERVER_CPU" $BIN/bare-ceiling --http-port "$BARE_HTTP" --grpc-port "$BARE_GRPC"
wait_ready "http://127.0.0.1:$IG_HTTP/v2/health/ready" infergate
wait_ready "http://127.0.0.1:$BARE_HTTP/v2/models/tiny" bare

echo "== in-process ONNX Runtime (one thread, core $SERVER_CPU)" >&2
for model in tiny mlp cnn; do
    taskset -c "$SERVER_CPU" $BIN/examples/ort_ceiling "$work/repo/$model/1/model.onnx" 2 1,2,4,8,16,32,64 \
        | sed "s/^{/{\"name\":\"$model\",/" >>"$work/ort.jsonl"
done

# measure SERVER PROTOCOL CONCURRENCY MODEL ROUND [loadtest args...]
measure() {
    local server=$1 protocol=$2 c=$3 model=$4 round=$5 port
    shift 5
    if [ "$server" = infergate ]; then
        [ "$protocol" = grpc ] && port=$IG_GRPC || port=$IG_HTTP
    else
        [ "$protocol" = grpc ] && port=$BARE_GRPC || port=$BARE_HTTP
    fi
    local served=$model
    [ "$server" = bare ] && served=tiny
    echo "   $server $model $protocol c=$c (round $round) $*" >&2
    taskset -c "$CLIENT_CPU" $BIN/loadtest --target "127.0.0.1:$port" --protocol "$protocol" --model "$served" \
        --concurrency "$c" --duration "$DURATION" --warmup "$WARMUP" --json --quiet "$@" \
        >"$work/runs/$server-$model-$protocol-c$c-r$round.json"
}

echo "== overhead: tiny, infergate vs. bare ceiling, alternating" >&2
for round in $(seq 1 "$ROUNDS"); do
    for protocol in grpc http-binary; do
        for c in 1 8 64; do
            measure infergate "$protocol" "$c" tiny "$round"
            measure bare "$protocol" "$c" tiny "$round"
        done
    done
done
echo "== compute: mlp and cnn on infergate; the bare ceiling with payloads of their size" >&2
for round in $(seq 1 "$ROUNDS"); do
    for model in mlp cnn; do
        [ "$model" = mlp ] && width=256 || width=12288
        for protocol in grpc http-binary; do
            for c in 1 64; do
                measure infergate "$protocol" "$c" "$model" "$round"
            done
        done
        # As many bytes per request as the model's input (the bare server
        # answers as many as it gets, so more than the model's 10 classes).
        for protocol in grpc http-binary; do
            measure bare "$protocol" 64 "$model" "$round" --shape "input=1,$width"
        done
    done
done

python3 - "$work" "$OUT" <<'PY'
import glob, json, os, statistics, sys, datetime, platform
work, out = sys.argv[1], sys.argv[2]
runs = {}
for path in glob.glob(f"{work}/runs/*.json"):
    server, model, rest = os.path.basename(path)[:-5].split("-", 2)
    protocol, c, _ = rest.rsplit("-", 2)
    r = json.load(open(path))
    runs.setdefault((server, model, protocol, int(c[1:])), []).append(r)
ort = [json.loads(l) for l in open(f"{work}/ort.jsonl")]

def med(key, field):
    rs = runs[key]
    if field == "qps":
        return statistics.median(r["qps"] for r in rs)
    return statistics.median(r["latency_us"][field] for r in rs)

def errors(key):
    return sum(sum(r["errors"].values()) for r in runs[key])

rows, ok = [], True
print(f"{'what':<34}{'infergate':>14}{'ceiling':>14}{'ratio':>8}  target")
for protocol in ["grpc", "http-binary"]:
    for c in [1, 8, 64]:
        ig, bare = med(("infergate", "tiny", protocol, c), "qps"), med(("bare", "tiny", protocol, c), "qps")
        ratio = ig / bare
        target = ">= 0.85" if c == 64 else ""
        met = ratio >= 0.85 if c == 64 else None
        ok &= met is not False
        print(f"{'tiny qps ' + protocol + ' c=' + str(c):<34}{ig:>14.0f}{bare:>14.0f}{ratio:>8.3f}  {target}{'' if met is None else (' met' if met else ' MISSED')}")
        rows.append(dict(kind="overhead", model="tiny", protocol=protocol, concurrency=c, infergate_qps=ig, ceiling_qps=bare, ratio=ratio,
                         infergate_p50_us=med(("infergate", "tiny", protocol, c), "p50"), bare_p50_us=med(("bare", "tiny", protocol, c), "p50"),
                         errors=errors(("infergate", "tiny", protocol, c))))
for model in ["mlp", "cnn"]:
    best = max((o for o in ort if o["name"] == model), key=lambda o: o["rows_per_s"])
    batch1 = next(o for o in ort if o["name"] == model and o["batch"] == 1)
    for protocol in ["grpc", "http-binary"]:
        bare64 = med(("bare", "tiny", protocol, 64), "qps")
        ceiling = 1 / (1 / bare64 + 1 / best["rows_per_s"])
        ig = med(("infergate", model, protocol, 64), "qps")
        ratio = ig / ceiling
        met = ratio >= 0.9
        ok &= met
        print(f"{model + ' qps ' + protocol + ' c=64':<34}{ig:>14.0f}{ceiling:>14.0f}{ratio:>8.3f}  >= 0.9 {'met' if met else 'MISSED'}  (ORT best: batch {best['batch']}, {best['rows_per_s']:.0f} rows/s)")
        # The same ceiling with the bare server carrying this model's payload size.
        bare_sized = sized = None
        if ("bare", model, protocol, 64) in runs:
            bare_sized = med(("bare", model, protocol, 64), "qps")
            sized = 1 / (1 / bare_sized + 1 / best["rows_per_s"])
            print(f"{'  same, payload-sized bare':<34}{ig:>14.0f}{sized:>14.0f}{ig / sized:>8.3f}  (bare with {model}-sized requests: {bare_sized:.0f} req/s)")
        p50 = med(("infergate", model, protocol, 1), "p50")
        budget = batch1["p50_us"] + med(("bare", "tiny", protocol, 1), "p50") + 50
        met1 = p50 <= budget
        ok &= met1
        print(f"{model + ' p50 us ' + protocol + ' c=1':<34}{p50:>14.0f}{budget:>14.0f}{p50 / budget:>8.3f}  <= ORT b1 + bare p50 + 50us {'met' if met1 else 'MISSED'}")
        rows.append(dict(kind="compute", model=model, protocol=protocol, concurrency=64, infergate_qps=ig, ceiling_qps=ceiling, ratio=ratio,
                         ort_best_batch=best["batch"], ort_best_rows_per_s=best["rows_per_s"], bare_qps=bare64,
                         bare_payload_sized_qps=bare_sized, payload_sized_ceiling_qps=sized, payload_sized_ratio=sized and ig / sized,
                         c1_p50_us=p50, c1_budget_us=budget, errors=errors(("infergate", model, protocol, 64))))
tiny1 = next(o for o in ort if o["name"] == "tiny" and o["batch"] == 1)
for protocol in ["grpc", "http-binary"]:
    p50 = med(("infergate", "tiny", protocol, 1), "p50")
    budget = tiny1["p50_us"] + med(("bare", "tiny", protocol, 1), "p50") + 50
    met1 = p50 <= budget
    ok &= met1
    print(f"{'tiny p50 us ' + protocol + ' c=1':<34}{p50:>14.0f}{budget:>14.0f}{p50 / budget:>8.3f}  <= ORT b1 + bare p50 + 50us {'met' if met1 else 'MISSED'}")
total_errors = sum(errors(k) for k in runs)
print(f"\nfailed requests across all runs: {total_errors}")
json.dump(dict(date=datetime.date.today().isoformat(), machine=f"{platform.machine()}, {os.cpu_count()} cores",
               rows=rows, ort=ort, all_targets_met=ok), open(out, "w"), indent=1)
print(f"all targets met: {ok}; details in {out}")
PY
