#!/usr/bin/env bash
# infergate side by side with its peers, in one run, with the same lean
# clients for all:
#   servers   bare          the bare ceiling (target/release/bare-ceiling: the
#                           same protocol stack answering `tiny` with plain
#                           arithmetic, any width)
#             infergate     target/release/infergate serve
#             triton        Triton Inference Server 2.51 (the tritonserver that
#                           ships in the nvidia-pytriton wheel), each model a
#                           Python-backend model running the ONNX file with
#                           onnxruntime (the wheel has no ONNX Runtime backend)
#             triton-cache  the same Triton, model `tiny_cached` with Triton's
#                           response cache: the clients send identical requests,
#                           so the model never runs and this is Triton's own
#                           frontend + core cost
#             mlserver      MLServer 1.7.1, a custom runtime running the ONNX
#                           file with onnxruntime (no binary tensor extension:
#                           its http-binary rows are n/a)
#   models    tiny (x*2+1, [1,16]), mlp ([1,256]) and cnn ([1,3,64,64]); every
#             ONNX Runtime at one intra-op and one inter-op thread
#   protocols http-json and http-binary (V2 binary tensor extension) with wrk,
#             grpc with h2load, each at c = 1, 8, 64: wrk -t1 -cC, h2load
#             -cC -t1 -m1 (C connections, one request in flight on each, as
#             wrk); and infergate's own loadtest on the same rows (by default
#             only for tiny: LOADTEST_MODELS).
# Ratios: tiny, each server's qps / bare's in the same row; mlp and cnn, each
# server's qps / the compute ceiling 1/(1/bare_payload_qps + 1/ort_best),
# where bare_payload_qps is the bare server carrying requests of the model's
# input size and ort_best the best rows/s of ONNX Runtime in-process with one
# thread (examples/ort_ceiling). Also infergate / triton-cache and infergate /
# mlserver, and each server's RSS after loading and after the run, and
# infergate's after SWAPS (1000) hot swaps of tiny's version.
#
# All servers run on core SERVER_CPU, the clients on CLIENT_CPU (taskset);
# all servers are started up front and the rounds alternate them (A B C ... A
# B C, per row) so that drift on a shared machine hits all alike. Before any
# load, every server/model/protocol is sent the exact request files the
# clients will send and the answers' values are checked (input*2+1 for tiny,
# in-process onnxruntime for mlp and cnn); a wrong answer stops the run.
#
#   bash benches/peers.sh                      # DURATION=5s ROUNDS=2
#   DURATION=1s ROUNDS=1 bash benches/peers.sh # smoke
#   SERVERS="bare infergate" MODELS=tiny PROTOCOLS=grpc CS="1 64" bash benches/peers.sh
#   LOADTEST_MODELS="" ...                     # no loadtest rows
#   SKIP_BUILD=1 ...                           # use the release binaries as they are
# Setup (idempotent, cached): wrk and h2load from Debian if missing, the venv
# .venv-peers from benches/peers/requirements.txt, Triton's directory tree
# (.venv-peers/tritonserver) and the release build. Writes the table to
# stdout, everything measured to $OUT (default target/peers/results.json) and
# the README tables to table.md beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
COMMAND="$(env | grep -E '^(DURATION|WARMUP|ROUNDS|SERVER_CPU|CLIENT_CPU|SERVERS|MODELS|PROTOCOLS|CS|LOADTEST_MODELS|MLSERVER_WORKERS|ORT_SECONDS|SWAPS|SKIP_BUILD|OUT)=' | sed -E "s/=(.*)/='\1'/" | tr '\n' ' ')bash benches/peers.sh $*"
began=$SECONDS

DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
ROUNDS=${ROUNDS:-2}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
SERVERS=${SERVERS:-bare infergate triton triton-cache mlserver}
MODELS=${MODELS:-tiny mlp cnn}
PROTOCOLS=${PROTOCOLS:-http-json http-binary grpc}
CS=${CS:-1 8 64}
LOADTEST_MODELS=${LOADTEST_MODELS-tiny}
# MLServer's inference processes; 0: in the server process (on one core a
# worker process only adds a hop).
MLSERVER_WORKERS=${MLSERVER_WORKERS:-0}
ORT_SECONDS=${ORT_SECONDS:-2}
SWAPS=${SWAPS:-1000}
OUT=${OUT:-target/peers/results.json}
VENV=.venv-peers
BIN=target/release

secs() { case $1 in *ms) awk "BEGIN{print ${1%ms}/1000}" ;; *s) echo "${1%s}" ;; *) echo "$1" ;; esac; }
has() { [[ " $1 " == *" $2 "* ]]; }

# ---------------------------------------------------------------- setup
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v h2load >/dev/null || need+=(nghttp2-client)
if [ ${#need[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    echo "peers: installing ${need[*]}" >&2
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -x $VENV/bin/python ] || ! cmp -s benches/peers/requirements.txt $VENV/.requirements.txt; then
    echo "peers: creating $VENV from benches/peers/requirements.txt" >&2
    python3 -m venv $VENV
    $VENV/bin/python -m pip install --quiet -r benches/peers/requirements.txt
    cp benches/peers/requirements.txt $VENV/.requirements.txt
    rm -rf $VENV/tritonserver
fi
SITE=$($VENV/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
PYVER=$($VENV/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])')

# Triton's tree as pytriton lays it out before it starts the server: the
# wheel's tritonserver folder with the Python backend's stub for this
# Python next to libtriton_python.so.
TRITON=$PWD/$VENV/tritonserver
if [ ! -x "$TRITON/bin/tritonserver" ]; then
    rm -rf "$TRITON.part"
    cp -r "$SITE/pytriton/tritonserver" "$TRITON.part"
    rm -rf "$TRITON.part/python_backend_stubs"
    cp "$SITE/pytriton/tritonserver/python_backend_stubs/$PYVER/triton_python_backend_stub" "$TRITON.part/backends/python/"
    mv "$TRITON.part" "$TRITON"
fi
# tritonserver's own libraries are in the wheel's nvidia_pytriton.libs; the
# stub embeds libpython$PYVER: the venv's own (its base Python's LIBDIR) when
# that Python is a shared build, else the system's.
TRITON_LD="$SITE/nvidia_pytriton.libs"
PYLIBDIR=$($VENV/bin/python -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR") or "")')
[ -e "$PYLIBDIR/libpython$PYVER.so.1.0" ] && TRITON_LD="$TRITON_LD:$PYLIBDIR"
if LD_LIBRARY_PATH=$TRITON_LD ldd "$TRITON/backends/python/triton_python_backend_stub" | grep -q 'not found'; then
    LD_LIBRARY_PATH=$TRITON_LD ldd "$TRITON/backends/python/triton_python_backend_stub" | grep 'not found' >&2
    echo "peers: Triton's Python stub misses a library (libpython$PYVER.so.1.0: apt-get install libpython$PYVER)" >&2
    exit 1
fi

bash scripts/setup.sh >/dev/null
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.ort/libonnxruntime.so.1.31.1}
[ "${SKIP_BUILD:-0}" = 1 ] || cargo build --release --locked --workspace --bins --example ort_ceiling

source benches/lib.sh
mkdir -p "$work/repo" "$work/runs" "$work/raw" "$(dirname "$OUT")"
cp -r models/tiny benches/models/mlp benches/models/cnn "$work/repo/"
$VENV/bin/python benches/peers/prepare.py payloads "$work/payloads"
PY=$VENV/bin/python

# Which model name each server answers, and which request it gets.
served() {
    case $1/$2 in
        bare/*) echo tiny ;;
        triton-cache/tiny) echo tiny_cached ;;
        triton-cache/*) echo "" ;;
        *) echo "$2" ;;
    esac
}
payload() {
    case $1/$2 in
        bare/tiny) echo tiny ;;
        bare/*) echo "$2-bare" ;;
        *) echo "$2" ;;
    esac
}
applies() { # SERVER MODEL PROTOCOL
    [ -n "$(served "$1" "$2")" ] || return 1
    [ "$1/$3" != mlserver/http-binary ] # MLServer: no binary tensor extension
}
process() { [ "$1" = triton-cache ] && echo triton || echo "$1"; }

# ---------------------------------------------------------------- in-process ORT
# Before the servers start, so that nothing else runs on the core.
: >"$work/ort.jsonl"
for model in $MODELS; do
    # tiny: batch 1 only, for the c=1 p50 bound (bare p50 + ORT batch 1 +
    # 10 µs); its ratios are against bare.
    batches=1,2,4,8,16,32,64
    [ "$model" = tiny ] && batches=1
    echo "== ONNX Runtime in-process, $model, one thread, core $SERVER_CPU" >&2
    taskset -c "$SERVER_CPU" $BIN/examples/ort_ceiling "$work/repo/$model/1/model.onnx" "$ORT_SECONDS" "$batches" \
        | sed "s/^{/{\"name\":\"$model\",/" >>"$work/ort.jsonl"
done

# ---------------------------------------------------------------- servers
declare -A HTTP GRPC PID
procs=()
for s in $SERVERS; do
    p=$(process "$s")
    has "${procs[*]:-}" "$p" || procs+=("$p")
done
for p in "${procs[@]}"; do HTTP[$p]=$(free_port); GRPC[$p]=$(free_port); done
ML_METRICS=$(free_port)
IG_METRICS=$(free_port)
$PY benches/peers/prepare.py repos "$work" "$SITE" "${HTTP[mlserver]:-0}" "${GRPC[mlserver]:-0}" "$ML_METRICS" "$MLSERVER_WORKERS"

starts=0
start_proc() { # PROCESS: start it (again) on its ports, PID[PROCESS] set
    local p=$1
    starts=$((starts + 1))
    case $p in
        bare)
            start "bare.$starts" taskset -c "$SERVER_CPU" $BIN/bare-ceiling --http-port "${HTTP[bare]}" --grpc-port "${GRPC[bare]}" ;;
        infergate)
            start "infergate.$starts" taskset -c "$SERVER_CPU" $BIN/infergate serve --model-repository "$work/repo" --poll-interval 0s \
                --http-port "${HTTP[infergate]}" --grpc-port "${GRPC[infergate]}" --metrics-port "$IG_METRICS" ;;
        triton)
            # Loopback only, no metrics endpoint (its CPU poller would run on
            # the servers' core), exit if a model fails to load.
            start "triton.$starts" env LD_LIBRARY_PATH="$TRITON_LD" taskset -c "$SERVER_CPU" "$TRITON/bin/tritonserver" \
                --model-repository "$work/triton" --backend-directory "$TRITON/backends" \
                --cache-directory "$TRITON/caches" --cache-config local,size=1048576 \
                --http-address 127.0.0.1 --http-port "${HTTP[triton]}" \
                --grpc-address 127.0.0.1 --grpc-port "${GRPC[triton]}" \
                --allow-metrics false --log-verbose 0 --strict-readiness true --exit-on-error true ;;
        mlserver)
            # PYTHONPATH: the custom runtime, benches/peers/onnx_runtime.py.
            start "mlserver.$starts" env PYTHONPATH="$PWD/benches/peers" taskset -c "$SERVER_CPU" $VENV/bin/mlserver start "$work/mlserver" ;;
    esac
    PID[$p]=${pids[-1]}
    LOG[$p]="$work/$p.$starts.log"
}
declare -A LOG
wait_up() { # PROCESS: up to 180 s for its readiness (Triton's Python stubs load slowly on a busy core)
    local p=$1 url
    case $p in
        bare) url="http://127.0.0.1:${HTTP[bare]}/v2/models/tiny" ;;
        *) url="http://127.0.0.1:${HTTP[$p]}/v2/health/ready" ;;
    esac
    for _ in $(seq 1 1800); do
        curl -sf "$url" >/dev/null && return 0
        kill -0 "${PID[$p]}" 2>/dev/null || break
        sleep 0.1
    done
    tail -50 "${LOG[$p]}" >&2
    echo "peers: $p did not get ready at $url" >&2
    exit 1
}
rss() { # PROCESS WHEN
    $PY benches/peers/report.py rss "${PID[$1]}" | sed "s/^{/{\"server\":\"$1\",\"when\":\"$2\",/" >>"$work/rss.jsonl"
}

echo "== starting ${procs[*]} on core $SERVER_CPU" >&2
for p in "${procs[@]}"; do start_proc "$p"; done
for p in "${procs[@]}"; do wait_up "$p"; done
for p in "${procs[@]}"; do rss "$p" after-loading; done
ready_s=$((SECONDS - began))

# ---------------------------------------------------------------- correctness
verify() { # SERVER [MODEL...]
    local s=$1 p model protos proto
    p=$(process "$s")
    shift
    for model in "$@"; do
        protos=()
        for proto in $PROTOCOLS; do applies "$s" "$model" "$proto" && protos+=("$proto"); done
        [ ${#protos[@]} -gt 0 ] || continue
        $PY benches/peers/verify.py "$work/payloads" "$s" "$(payload "$s" "$model")" "$(served "$s" "$model")" \
            "${HTTP[$p]}" "${GRPC[$p]}" "${protos[@]}" >>"$work/verify.jsonl"
    done
}
echo "== checking every server's answers (the exact request files the clients send)" >&2
: >"$work/verify.jsonl"
for s in $SERVERS; do verify "$s" $MODELS; done
echo "   $(wc -l <"$work/verify.jsonl") server/model/protocol combinations answer correctly" >&2

# ---------------------------------------------------------------- measuring
DUR_S=$(secs "$DURATION")
WARM_S=$(secs "$WARMUP")
: >"$work/crashes.jsonl"
not_applicable=()

wrk_run() { # PORT MODEL PAYLOAD PROTOCOL C SECONDS OUTFILE
    local url="http://127.0.0.1:$1/v2/models/$2/infer" body type hlen=""
    if [ "$4" = http-binary ]; then
        body="$work/payloads/$3.bin" type=application/octet-stream
        hlen=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["header_length"])' "$work/payloads/$3.meta.json")
    else
        body="$work/payloads/$3.json" type=application/json
    fi
    timeout $((${6%.*} + 60)) taskset -c "$CLIENT_CPU" wrk -t1 -c"$5" -d"$6s" --timeout 10s -s benches/peers/wrk_post.lua "$url" -- "$body" "$type" $hlen >"$7" 2>&1 || true
}
# h2load by request count (-n), not by duration: at a deadline h2load drops
# the requests in flight, and Triton 2.51 can crash when gRPC clients cancel
# in flight. Two warm-up runs measure the rate; the measured run asks for
# DURATION's worth of requests at that rate.
h2load_run() { # PORT MESSAGE_FILE C N OUTFILE [LOG]
    local n=$4
    [ "$n" -ge "$3" ] || n=$3
    timeout $((${DUR_S%.*} * 4 + 60)) taskset -c "$CLIENT_CPU" h2load -c"$3" -t1 -m1 -n"$n" -d "$2" \
        -H 'content-type: application/grpc' -H 'te: trailers' ${6:+--log-file "$6"} \
        "http://127.0.0.1:$1/inference.GRPCInferenceService/ModelInfer" >"$5" 2>&1 || true
}
h2load_rate() { awk '/^finished in/ {gsub(",", "", $4); print int($4)}' "$1" | grep . || echo 0; }

measure() { # CLIENT SERVER MODEL PROTOCOL C ROUND
    local client=$1 s=$2 model=$3 proto=$4 c=$5 round=$6 p port name pl tag raw rate
    p=$(process "$s")
    [ "$proto" = grpc ] && port=${GRPC[$p]} || port=${HTTP[$p]}
    name=$(served "$s" "$model")
    pl=$(payload "$s" "$model")
    tag="$client-$s-$model-$proto-c$c-r$round"
    raw="$work/raw/$tag"
    local meta=(client="$client" server="$s" model="$model" protocol="$proto" c="$c" round="$round" served_as="$s" payload="$pl")
    echo "   $client $s $model $proto c=$c (round $round)" >&2
    if [ "$client" = loadtest ]; then
        local shape=()
        [ "$s" = bare ] && [ "$model" != tiny ] && shape=(--shape "input=1,$(
            $PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["shape"][1])' "$work/payloads/$pl.meta.json")")
        timeout $((${DUR_S%.*} + ${WARM_S%.*} + 60)) taskset -c "$CLIENT_CPU" $BIN/loadtest --target "127.0.0.1:$port" --protocol "$proto" \
            --model "$name" --concurrency "$c" --duration "$DURATION" --warmup "$WARMUP" --json --quiet "${shape[@]}" \
            >"$raw.json" 2>"$raw.err" || true
        $PY benches/peers/report.py run loadtest "$work" "$raw.json" "${meta[@]}" >"$work/runs/$tag.json"
    elif [ "$proto" = grpc ]; then
        local msg="$work/payloads/$pl.$name.grpc"
        h2load_run "$port" "$msg" "$c" $((c * 4 > 50 ? c * 4 : 50)) "$raw.w1"
        rate=$(h2load_rate "$raw.w1")
        if [ "$WARM_S" != 0 ]; then
            h2load_run "$port" "$msg" "$c" "$(awk "BEGIN{print int($rate * $WARM_S)}")" "$raw.w2"
            rate=$(h2load_rate "$raw.w2")
        fi
        h2load_run "$port" "$msg" "$c" "$(awk "BEGIN{print int($rate * $DUR_S)}")" "$raw.out" "$raw.log"
        touch "$raw.log"
        $PY benches/peers/report.py run h2load "$work" "$raw.out" "$raw.log" "${meta[@]}" >"$work/runs/$tag.json"
        rm -f "$raw.log"
    else
        [ "$WARM_S" != 0 ] && wrk_run "$port" "$name" "$pl" "$proto" "$c" "$WARM_S" "$raw.warm"
        wrk_run "$port" "$name" "$pl" "$proto" "$c" "$DUR_S" "$raw.out"
        $PY benches/peers/report.py run wrk "$work" "$raw.out" "${meta[@]}" >"$work/runs/$tag.json"
    fi
    # A server that died is reported and started again (Triton 2.51 can
    # crash when gRPC clients cancel in flight).
    if ! kill -0 "${PID[$p]}" 2>/dev/null; then
        local old=${PID[$p]}
        echo "!! $p (pid $old) died during $tag; restarting it" >&2
        tail -20 "${LOG[$p]}" >&2
        sed -i 's/}$/,"server_died":true}/' "$work/runs/$tag.json"
        start_proc "$p"
        wait_up "$p"
        echo "{\"server\":\"$p\",\"pid\":$old,\"during\":\"$tag\",\"restarted_pid\":${PID[$p]}}" >>"$work/crashes.jsonl"
    fi
}

for s in $SERVERS; do for proto in $PROTOCOLS; do
    applies "$s" tiny "$proto" || [ "$s" = triton-cache ] || not_applicable+=("$s $proto")
done; done
echo "== measuring: $ROUNDS round(s) of $DURATION per row (+ $WARMUP warm-up), servers alternating" >&2
for round in $(seq 1 "$ROUNDS"); do
    for client in lean loadtest; do
        for model in $MODELS; do
            [ "$client" = loadtest ] && ! has "$LOADTEST_MODELS" "$model" && continue
            for proto in $PROTOCOLS; do
                for c in $CS; do
                    for s in $SERVERS; do
                        applies "$s" "$model" "$proto" || continue
                        measure "$client" "$s" "$model" "$proto" "$c" "$round"
                    done
                done
            done
        done
    done
done
for p in "${procs[@]}"; do rss "$p" after-run; done
# Memory after SWAPS version swaps of tiny, with a client checking answers
# all along. infergate only, for now: Triton runs here in its default
# model-control mode (none), where a load request is refused; the same
# swaps against it would need a second Triton in explicit mode.
: >"$work/swaps.jsonl"
if has "${procs[*]}" infergate && [ "$SWAPS" -gt 0 ]; then
    echo "== infergate: $SWAPS version swaps of tiny" >&2
    $PY benches/peers/swaps.py "$work/repo/tiny" tiny "${HTTP[infergate]}" "$SWAPS" >>"$work/swaps.jsonl"
    rss infergate "after-$SWAPS-swaps"
fi

# ---------------------------------------------------------------- report
triton_version=$(grep -ho '"server_version":"[^"]*"\|server_version *| *[0-9.]*' "$work"/triton.*.log 2>/dev/null | head -1 | grep -o '[0-9][0-9.]*' || true)
$PY - "$work/settings.json" <<PY
import json, sys
na = """$(printf '%s\n' "${not_applicable[@]:-}")""".split("\n")
json.dump({
    "command": """$COMMAND""",
    "DURATION": "$DURATION", "WARMUP": "$WARMUP", "ROUNDS": $ROUNDS,
    "SERVER_CPU": "$SERVER_CPU", "CLIENT_CPU": "$CLIENT_CPU",
    "SERVERS": "$SERVERS", "MODELS": "$MODELS", "PROTOCOLS": "$PROTOCOLS", "CS": "$CS",
    "LOADTEST_MODELS": "$LOADTEST_MODELS", "MLSERVER_WORKERS": $MLSERVER_WORKERS, "ORT_SECONDS": "$ORT_SECONDS", "SWAPS": $SWAPS,
    "clients": {"http": "wrk -t1 -cC (one request in flight per connection)",
                "grpc": "h2load -cC -t1 -m1 -n N (N: DURATION at the rate of a warm-up run)",
                "loadtest": "target/release/loadtest --concurrency C (closed loop)"},
    "not_applicable": [x.split(" ", 1) for x in na if x],
    "versions": {"triton": "${triton_version:-?}",
                 "wrk": """$(wrk -v 2>&1 | head -1)""", "h2load": """$(h2load --version 2>&1 | head -1)""",
                 "infergate_commit": "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src && echo || echo '+dirty src')",
                 "python_packages": """$($PY -m pip freeze 2>/dev/null | grep -iE '^(nvidia-pytriton|mlserver|onnxruntime|uvloop|httptools|numpy|tritonclient|grpcio|protobuf)==' | tr '\n' ' ')""".split()},
    "setup_until_ready_s": $ready_s,
    "total_s": $((SECONDS - began)),
}, open(sys.argv[1], "w"), indent=1)
PY
$PY benches/peers/report.py table "$work" "$OUT" "$(dirname "$OUT")/table.md"
