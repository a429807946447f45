#!/usr/bin/env bash
# The continuous-training loop, step by step, against a real server on
# loopback: serve digits v1 -> traffic with ids -> labels, late and some
# wrong -> live accuracy and the checks -> export -> retrain -> v3 passes
# the gate -> shadow with live accuracy of both -> promoted by the
# shadow-first policy -> rolled back. Prints each command and what it
# answered: the README's "The loop, end to end" is this script's output.
#
#   bash scripts/walkthrough.sh      (after scripts/setup.sh --test)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.ort/libonnxruntime.so.1.31.1}
PY=${PYTHON:-.venv/bin/python}
cargo build --release --locked -q --bin infergate
BIN=$PWD/target/release/infergate

# A repository of digits v1 only, rolled out shadow-first, logged.
repo=$work/models
mkdir -p "$repo"
cp -r models/digits "$repo/digits"
rm -rf "$repo/digits/2"
{
    echo 'rollout = "shadow-first"'
    sed 's/max_p99_ms = 50.0/max_p99_ms = 5000.0/' models/digits/config.toml
    cat <<TOML

[promotion]
min_requests = 200
min_agreement = 0.5
min_accuracy_gain = -0.05    # at most 5 points below the primary, on the same labelled ids
min_labels = 200
sample_rate = 1.0

[log]
dir = "digits"
max_age = "1s"
TOML
} >"$repo/digits/config.toml"

http=$(free_port) grpc=$(free_port) metrics=$(free_port)
IG=http://127.0.0.1:$http
start server "$BIN" serve --model-repository "$repo" --host 127.0.0.1 \
    --http-port "$http" --grpc-port "$grpc" --metrics-port "$metrics" \
    --poll-interval 0s --prediction-log-dir "$work/predictions"
wait_ready "$IG/v2/health/ready" server
cd "$work"

step() { printf '\n## %s\n' "$*"; }
show() {
    printf '$ %s\n' "$*"
    eval "$@"
    echo
}
export IG repo

# The traffic: held-out digits as a client would send them, one request
# per row; what it kept (id, truth) goes to served-N.jsonl.
cat >send.py <<'PY'
import json, os, sys, urllib.request
import numpy as np
from sklearn.datasets import load_digits
X, y = load_digits(return_X_y=True)
# Shuffled once (the same way each run): the dataset's later rows are
# other writers' digits.
order = np.random.default_rng(7).permutation(len(y))
X, y = X[order], y[order]
first, count, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
versions = {}
with open(out, "w") as f:
    for r in range(first, first + count):
        body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": X[r].tolist()}]}
        req = urllib.request.Request(os.environ["IG"] + "/v2/models/digits/infer", json.dumps(body).encode())
        a = json.load(urllib.request.urlopen(req))
        versions[a["model_version"]] = versions.get(a["model_version"], 0) + 1
        label = next(o for o in a["outputs"] if o["name"] == "label")["data"][0]
        f.write(json.dumps({"id": a["id"], "row": r, "truth": int(y[r]), "predicted": label}) + "\n")
print(json.dumps({"sent": count, "answered_by_version": versions}))
PY
# The labels: the truth, except every `wrong`-th one (0: none).
cat >labels.py <<'PY'
import json, sys
served, wrong = sys.argv[1], int(sys.argv[2])
rows = [json.loads(l) for l in open(served)]
labels = [{"id": s["id"], "label": (s["truth"] + 1) % 10 if wrong and i % wrong == 0 else s["truth"]}
          for i, s in enumerate(rows)]
print(json.dumps({"labels": labels}))
right = sum(s["predicted"] == l["label"] for s, l in zip(rows, labels))
print(f"{len(labels)} labels; the prediction equals the label for {right}: {right / len(labels):.4f}", file=sys.stderr)
PY
# A check report, one item a line.
cat >checks.py <<'PY'
import json, sys
r = json.load(sys.stdin)
print(r["trigger"], r["period_start"], "..", r["period_end"], "complete:", r["complete"], "verdict:", r["verdict"])
for version, c in r["versions"].items():
    for i in c["items"]:
        print(f"  v{version} {i['name']:21} {i['verdict']:5} {i['reason']}")
PY
# A few fields of a JSON answer, on one line each.
cat >pick.py <<'PY'
import json, sys
doc = json.load(sys.stdin)
for path in sys.argv[1:]:
    v = doc
    for k in path.split("."):
        v = v[int(k)] if isinstance(v, list) else v.get(k) if isinstance(v, dict) else None
    print(f"{path}: {json.dumps(v)}")
PY
pick() { "$OLDPWD/$PY" pick.py "$@"; }
py() { "$OLDPWD/$PY" "$@"; }

step "1. digits v1 serves; every answer carries an id"
show "curl -s \$IG/v2/models/digits/infer -d '{\"inputs\":[{\"name\":\"input\",\"shape\":[1,64],\"datatype\":\"FP32\",\"data\":[$(py -c 'from sklearn.datasets import load_digits; print(",".join(str(int(v)) for v in load_digits().data[0]))')]}]}' | pick id model_version outputs.1.data"

step "2. traffic: 1200 digits, one request each"
show "py send.py 0 1200 served-1.jsonl"

step "3. labels arrive later; every 25th is wrong on purpose"
show "py labels.py served-1.jsonl 25 >labels-1.json"
show "curl -s \$IG/v2/models/digits/feedback -d @labels-1.json"

step "4. live accuracy: the server's figure is that count"
show "curl -s \$IG/v2/models/digits/accuracy | pick versions.1.cumulative.labelled_rows versions.1.cumulative.accuracy versions.1.cumulative.label_delay_p50_s"
show "curl -s \$IG/v2/models/digits/health | pick verdict staleness.live_accuracy.reason"

step "5. the daily checks, on request: today so far"
show "curl -s -X POST \$IG/v2/models/digits/checks | py checks.py"

step "6. a training set: the log joined with the labels"
sleep 1.5 # the log's files close within max_age (1 s)
show "ls predictions/digits"
show "\$BIN export --log predictions/digits --out train.parquet"

step "7. retrain on it; the new version goes into the repository as 3"
show "py \$OLDPWD/scripts/retrain_digits.py train.parquet \$repo/digits/3"
show "curl -s -X POST \$IG/v2/repository/models/digits/load -w '%{http_code}\n'"
show "curl -s -X POST \$IG/v2/repository/index -d '{}' | py -c 'import json,sys; [print(r[\"name\"], r[\"version\"], r[\"state\"], r.get(\"reason\", \"\")) for r in json.load(sys.stdin)]'"
show "curl -s \$IG/v2/models/digits/shadow | pick target promotion.status"

step "8. v1 answers, v3 runs as the shadow; labels for both"
show "py send.py 1200 500 served-2.jsonl"
sleep 1
show "py labels.py served-2.jsonl 0 >labels-2.json"
show "curl -s \$IG/v2/models/digits/feedback -d @labels-2.json"
show "curl -s \$IG/v2/models/digits/shadow | pick cumulative.compared cumulative.outputs.label.agreement live_accuracy.primary.accuracy live_accuracy.shadow.accuracy live_accuracy.accuracy_gain promotion.status"

step "9. the next requests: promoted by the shadow-first policy"
show "py send.py 1700 50 served-3.jsonl"

step "10. roll back: v1 answers again"
show "curl -s -X POST \$IG/v2/models/digits/rollback -d '{}'"
show "py send.py 1750 5 served-4.jsonl"
step "the server's log lines for the rollout"
grep -E "gate|promot|roll|shadow" "$work/server.log" | sed -E 's/\x1b\[[0-9;]*m//g' | cut -c1-220 | tail -n 8
