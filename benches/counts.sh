#!/usr/bin/env bash
# Instruction counts of the request path's pure pieces (examples/path_counts.rs)
# for two builds side by side: repeatable where timings on a shared machine
# are not (criterion's micro benches swing ±30 % here from run to run).
#
#   A=old/path_counts B=target/release/examples/path_counts bash benches/counts.sh
# (build each with `cargo build --release --example path_counts`). Needs valgrind.
set -euo pipefail
: "${A:?the first path_counts binary}" "${B:?the second path_counts binary}"
command -v valgrind >/dev/null || { echo "valgrind not found (apt-get install valgrind)" >&2; exit 1; }
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null --toggle-collect='path_counts::piece*' "$1" "$2" 2>&1 \
        | sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
printf '%-14s %14s %14s %8s\n' piece A B B/A
for piece in decode_json decode_binary encode_json split record_mlp; do
    a=$(count "$A" "$piece"); b=$(count "$B" "$piece")
    printf '%-14s %14s %14s %8.4f\n' "$piece" "$a" "$b" "$(echo "$b / $a" | bc -l)"
done
