#!/usr/bin/env bash
# Instructions per ONNX Runtime run of `tiny` (or MODEL), by the way it is
# called (examples/ort_runcost.rs), counted by callgrind: N and 3N runs,
# the difference over 2N, so that start-up cancels out. Repeatable on a
# shared machine, unlike a timing.
#   bash benches/ort_runcost.sh            # N=500, ROWS=1
#   ROWS=8 bash benches/ort_runcost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-500}; ROWS=${ROWS:-1}; MODEL=${MODEL:-models/tiny/1/model.onnx}
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.ort/libonnxruntime.so.1.31.1}
command -v valgrind >/dev/null || { echo "valgrind not found (apt-get install valgrind)" >&2; exit 1; }
cargo build --release --locked --example ort_runcost >&2
count() { # MODE RUNS -> instructions of the whole process
    valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/ort_runcost \
        "$MODEL" "$1" "$2" "$ROWS" 2>&1 | grep -o "Collected : [0-9]*" | awk '{print $3}'
}
for mode in backend raw raw-nopat raw-noopt binding; do
    lo=$(count "$mode" "$N"); hi=$(count "$mode" $((3 * N)))
    echo "$mode rows=$ROWS: $(( (hi - lo) / (2 * N) )) instructions per run"
done
