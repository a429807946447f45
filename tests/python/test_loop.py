"""The continuous-training loop against the real server, end to end:
serve digits v1 -> traffic with ids -> labels sent late (some wrong on
purpose) -> live accuracy equals this test's own count -> `infergate export`
-> retrain on the exported rows -> a new ONNX version -> it passes the gate
-> it runs as the shadow with live accuracy of both -> the shadow-first
policy promotes it -> roll back.

Its own server (not the session's): the repository is changed on disk.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_digits

from conftest import REPO_ROOT, _binary, _http_status, _start, _stop

PROMOTION = """rollout = "shadow-first"
"""
SECTIONS = """
[promotion]
min_requests = 50
min_agreement = 0.5
# On the same labelled requests, the candidate may be at most 5 points
# less accurate than the primary.
min_accuracy_gain = -0.05
min_labels = 50
sample_rate = 1.0

[log]
dir = "{log}"
max_age = "1s"
"""


def call(base, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            text = r.read()
            return r.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def infer(base, rows, version=None):
    path = "/v2/models/digits" + (f"/versions/{version}" if version else "") + "/infer"
    status, v = call(base, "POST", path, {"inputs": [{
        "name": "input", "shape": [len(rows), 64], "datatype": "FP32",
        "data": np.asarray(rows, dtype=np.float32).ravel().tolist()}]})
    assert status == 200, v
    label = next(o for o in v["outputs"] if o["name"] == "label")
    return v["id"], v["model_version"], label["data"]


@pytest.fixture()
def loop_server(tmp_path):
    repository = tmp_path / "repository"
    shutil.copytree(REPO_ROOT / "models" / "digits", repository / "digits")
    shutil.rmtree(repository / "digits" / "2")  # v1 serves; v3 will be retrained
    config = repository / "digits" / "config.toml"
    text = config.read_text().replace("max_p99_ms = 50.0", "max_p99_ms = 5000.0")
    config.write_text(PROMOTION + text + SECTIONS.format(log=tmp_path / "log"))
    srv = _start(_binary(), repository, tmp_path / "server.log")
    deadline = time.monotonic() + 30
    while _http_status(f"{srv.base}/v2/health/ready") != 200:
        assert srv.process.poll() is None and time.monotonic() < deadline, srv.log()
        time.sleep(0.1)
    yield srv, tmp_path / "log"
    problem = _stop(srv.process)
    assert problem is None, f"{problem}\n{srv.log()[-3000:]}"


def test_the_whole_loop(loop_server, tmp_path):
    srv, log_dir = loop_server
    base = srv.base
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(7)
    # Shuffled once: the dataset's later rows are other writers' digits, and
    # training on the first part only would test on a shifted population.
    order = rng.permutation(len(y))
    X, y = X[order].astype(np.float32), y[order]

    # 1. Traffic with ids: rows 0..1199 in requests of 1 to 4 rows.
    sent = []  # (id, rows, predicted, labels sent)
    i = 0
    while i < 1200:
        n = int(rng.integers(1, 5))
        rows = list(range(i, min(i + n, 1200)))
        rid, version, predicted = infer(base, X[rows])
        assert version == "1"
        sent.append([rid, rows, predicted, None])
        i += n

    # 2. Labels, late, in batches: the truth, but every 25th request is
    # labelled wrong on purpose.
    for k, s in enumerate(sent):
        truth = [int(y[r]) for r in s[1]]
        s[3] = [(t + 1) % 10 for t in truth] if k % 25 == 0 else truth
    for start in range(0, len(sent), 100):
        chunk = sent[start:start + 100]
        status, v = call(base, "POST", "/v2/models/digits/feedback", {"labels": [
            {"id": s[0], "label": s[3] if len(s[3]) > 1 else s[3][0]} for s in chunk]})
        assert status == 200, v
        assert v["applied"] == len(chunk) and not v["unknown"], v

    # 3. Live accuracy equals the test's own count.
    rows_labelled = sum(len(s[1]) for s in sent)
    right = sum(p == l for s in sent for p, l in zip(s[2], s[3]))
    status, acc = call(base, "GET", "/v2/models/digits/accuracy")
    assert status == 200, acc
    cum = acc["versions"]["1"]["cumulative"]
    assert cum["labelled_rows"] == rows_labelled == 1200
    assert cum["accuracy"] == right / rows_labelled

    # 4. Export: the log's files close within max_age (1 s).
    time.sleep(1.5)
    out = tmp_path / "train.parquet"
    run = subprocess.run([str(_binary()), "export", "--log", str(log_dir), "--out", str(out)],
                         capture_output=True, text=True, cwd=REPO_ROOT)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["rows"] == 1200 and summary["skipped"] == 0, summary
    table = pq.read_table(out).to_pydict()
    features = np.asarray(table["input"], dtype=np.float32)
    labels = np.asarray(table["label"], dtype=np.int64)
    # Every exported row is a row the test sent, with the label it sent.
    by_id = {s[0]: s for s in sent}
    for rid, row, f, l, p in zip(table["id"], table["row"], features, labels, table["prediction"]):
        s = by_id[rid]
        assert np.array_equal(f, X[s[1][row]]) and l == s[3][row] and p == s[2][row]

    # 5. Retrain on the exported rows with the script the README shows;
    # it writes version 3 (model and metadata) into the repository.
    run = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "retrain_digits.py"), str(out),
                          str(srv.repository / "digits" / "3")], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    retrained = json.loads(run.stdout)
    assert retrained["training_rows"] + retrained["heldout_rows"] == 1200, retrained
    meta = json.loads((srv.repository / "digits" / "3" / "metadata.json").read_text())
    assert meta["heldout_accuracy"] == pytest.approx(retrained["heldout_accuracy"], abs=1e-4)
    status, v = call(base, "POST", "/v2/repository/models/digits/load")
    assert status == 200, v

    # 6. It passed the gate and runs as the shadow; v1 still answers.
    status, index = call(base, "POST", "/v2/repository/index", {})
    state = {r["version"]: r["state"] for r in index if r["name"] == "digits"}
    assert state.get("3") == "READY", index
    status, shadow = call(base, "GET", "/v2/models/digits/shadow")
    assert status == 200 and shadow["target"] == {"version": 3}, shadow

    # 7. More traffic (rows 1200..1796), mirrored to v3; labels, the truth.
    phase2 = []
    for r in range(1200, 1797):
        rid, version, predicted = infer(base, X[r:r + 1])
        assert version == "1"
        phase2.append((rid, r, predicted[0]))
    for _ in range(500):
        status, shadow = call(base, "GET", "/v2/models/digits/shadow")
        if shadow["inflight"] == 0 and shadow["cumulative"]["compared"] >= len(phase2):
            break
        time.sleep(0.02)
    # Before the labels, the candidate waits for them.
    status, shadow = call(base, "GET", "/v2/models/digits/shadow")
    assert "min_labels" in shadow["promotion"]["status"], shadow["promotion"]
    status, v = call(base, "POST", "/v2/models/digits/feedback", {"labels": [
        {"id": rid, "label": int(y[r])} for rid, r, _ in phase2]})
    assert status == 200 and v["applied"] == len(phase2), v

    # Live accuracy of both on the same requests, as the test counts it:
    # v3's answers asked for by the test itself (naming the version is
    # not mirrored).
    _, _, v3 = infer(base, X[1200:1797], version="3")
    primary_right = sum(p == int(y[r]) for _, r, p in phase2)
    shadow_right = sum(p == int(y[r]) for (_, r, _), p in zip(phase2, v3))
    status, shadow = call(base, "GET", "/v2/models/digits/shadow")
    live = shadow["live_accuracy"]
    assert live["primary"]["labelled_rows"] == live["shadow"]["labelled_rows"] == len(phase2), live
    assert live["primary"]["accuracy"] == primary_right / len(phase2)
    assert live["shadow"]["accuracy"] == shadow_right / len(phase2)

    # 8. The next mirrored comparisons see enough labels: promoted by itself.
    promoted = False
    for k in range(200):
        _, version, _ = infer(base, X[k:k + 1])
        if version == "3":
            promoted = True
            break
        time.sleep(0.01)
    assert promoted, call(base, "GET", "/v2/models/digits/shadow")[1].get("promotion")

    # 9. Roll back: v1 answers again.
    status, v = call(base, "POST", "/v2/models/digits/rollback", {})
    assert status == 200, v
    assert infer(base, X[0:1])[1] == "1"
