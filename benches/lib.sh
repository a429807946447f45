# Sourced by the side-by-side scripts in benches/: a work folder removed on
# exit, the servers they start (ended on exit, by PID), free loopback ports
# and the wait for a server to be ready.
#   source benches/lib.sh
#   start NAME CMD...        runs CMD in the background, output in $work/NAME.log
#   wait_ready URL NAME      up to 30 s for URL to answer 2xx, else NAME's log and exit 1

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start() {
    local name=$1
    shift
    "$@" >"$work/$name.log" 2>&1 &
    pids+=($!)
}

wait_ready() {
    for _ in $(seq 1 300); do
        curl -sf "$1" >/dev/null && return 0
        sleep 0.1
    done
    cat "$work/$2.log"
    exit 1
}
