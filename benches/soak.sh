#!/usr/bin/env bash
# The soak (issue 14): open-loop load over gRPC and HTTP on `digits` for
# DURATION while, every STEP seconds, a version is added, a broken one
# dropped in, promote / rollback called, a shadow started and stopped, the
# versions removed, `tiny` unloaded and loaded and `digits` reloaded, all
# under load; RSS, file descriptors and threads sampled throughout. Passes
# when no admitted request fails, RSS after warming up grows < 10 %, the
# threads and fds come back to what they were, and the server counted every
# request sent (benches/soak.py prints the series and the verdicts).
#
#   bash benches/soak.sh                     # DURATION=600 RATE=300 STEP=3
#   DURATION=60 bash benches/soak.sh         # the test suite's short run
#   IG_BIN=target/debug/infergate LOADTEST_BIN=target/debug/loadtest ...  # no build
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-600}
RATE=${RATE:-300}
STEP=${STEP:-3}
OUT=${OUT:-target/soak/results.txt}

bash scripts/setup.sh >/dev/null
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.ort/libonnxruntime.so.1.31.1}
if [ -z "${IG_BIN:-}" ] || [ -z "${LOADTEST_BIN:-}" ]; then
    cargo build --release --locked --workspace --bins
fi
IG_BIN=${IG_BIN:-target/release/infergate}
LOADTEST_BIN=${LOADTEST_BIN:-target/release/loadtest}

source benches/lib.sh
mkdir -p "$work/repo" "$(dirname "$OUT")"
cp -r models/digits models/tiny "$work/repo/"
# What the server keeps by design fills within the first minute, so that
# growth after it is a leak, not a buffer filling: statistics windows of 5 s
# (10 kept: 50 s; the default 60 s windows take 10 minutes to fill) and at
# most 20 000 predictions kept for labels (the digits config says 100 000:
# almost 3 minutes at 600 req/s).
sed -i 's/^max_predictions = .*/max_predictions = 20000/' "$work/repo/digits/config.toml"
grep -q '^max_predictions = 20000' "$work/repo/digits/config.toml"
HTTP=$(free_port); GRPC=$(free_port); METRICS=$(free_port)
start server "$IG_BIN" serve --model-repository "$work/repo" --poll-interval 1s --stats-window 5s \
    --http-port "$HTTP" --grpc-port "$GRPC" --metrics-port "$METRICS"
wait_ready "http://127.0.0.1:$HTTP/v2/health/ready" server
SERVER_PID=${pids[0]}

rc=0
python3 benches/soak.py --http "$HTTP" --grpc "$GRPC" --metrics "$METRICS" --pid "$SERVER_PID" \
    --repo "$work/repo" --loadtest "$LOADTEST_BIN" --duration "$DURATION" --rate "$RATE" \
    --step "$STEP" --poll 1 --out "$OUT" || rc=$?
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    echo "FAIL: the server died" >&2
    tail -50 "$work/server.log" >&2
    exit 1
fi
if [ "$rc" != 0 ]; then
    echo "--- the server's log (last 40 lines) ---" >&2
    tail -40 "$work/server.log" >&2
fi
exit "$rc"
