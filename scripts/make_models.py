#!/usr/bin/env python3
"""Train and export infergate's default ONNX models, plus the test fixtures.

Run from the repository root, inside a virtual environment made from
scripts/requirements-models.txt:

    python scripts/make_models.py            # (re)generate every file
    python scripts/make_models.py --check    # ... then self-check with ONNX Runtime

Everything is deterministic (fixed seeds, fixed split) except the metadata
fields `trained_at` and `training_seconds`.  Set SOURCE_DATE_EPOCH to pin
`trained_at`.

The ONNX graphs are written by hand with `onnx.helper` from the trained
weights (no skl2onnx), so tests can recompute every output from the
initializers stored in the models.

Files written (paths relative to the repo root):

    models/digits/config.toml
    models/digits/1/model.onnx, models/digits/1/metadata.json   (LogisticRegression)
    models/digits/2/model.onnx, models/digits/2/metadata.json   (MLP, 1 hidden layer)
    models/digits/{1,2}/baseline.json                           (drift baseline: training inputs' bins)
    models/digits/data/heldout.json
    models/tiny/1/model.onnx, models/tiny/1/metadata.json       (output = input*2+1)
    models/README.md is hand-written and NOT generated
    tests/fixtures/digits_expected.json
    tests/models/types/1/model.onnx                             (identity, every dtype)
    tests/models/types_typed/1/model.onnx                       (identity, every dtype but FP16)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import sklearn
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier

OPSET = 17
IR_VERSION = 9  # explicit: older runtimes reject the newest IR versions
PRODUCER = "infergate-make_models"

SPLIT_SEED = 42
HELDOUT_FRACTION = 0.2
FEATURE_SCALE = 16.0  # digits pixels are 0..16; scaling is folded into layer 1

REPO = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def trained_at_now() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        t = _dt.datetime.fromtimestamp(int(epoch), tz=_dt.timezone.utc)
    else:
        t = _dt.datetime.now(tz=_dt.timezone.utc)
    return t.replace(microsecond=0).isoformat().replace("+00:00", "Z")


def write_text(rel: str, text: str) -> Path:
    path = REPO / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {rel} ({path.stat().st_size} bytes)")
    return path


def write_json(rel: str, obj) -> Path:
    return write_text(rel, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def write_model(rel: str, model: onnx.ModelProto) -> Path:
    onnx.checker.check_model(model, full_check=True)
    path = REPO / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    print(f"wrote {rel} ({path.stat().st_size} bytes)")
    return path


def make_model(graph: onnx.GraphProto, doc: str, metadata: dict | None = None) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        producer_version="1",
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    if metadata:
        helper.set_model_props(model, {k: str(v) for k, v in metadata.items() if v is not None})
    return model


def f32_init(name: str, arr) -> TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(arr, dtype=np.float32), name=name)


def compact_rows(rows, fmt) -> str:
    """JSON array of arrays, one row per line (keeps fixtures diff-friendly)."""
    return "[\n" + ",\n".join("    [" + ", ".join(fmt(v) for v in r) + "]" for r in rows) + "\n  ]"


def fnum(v: float) -> str:
    # 9 significant digits round-trips float32 exactly.
    return repr(float(f"{float(v):.9g}"))


# --------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------

def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def digits_graph(layers: list[tuple[np.ndarray, np.ndarray]], name: str) -> onnx.GraphProto:
    """layers: [(W [in,out], b [out])...]; ReLU between layers, softmax at the end."""
    nodes, inits = [], []
    cur = "input"
    for i, (w, b) in enumerate(layers):
        last = i == len(layers) - 1
        inits += [f32_init(f"W{i}", w), f32_init(f"B{i}", b)]
        nodes.append(helper.make_node("MatMul", [cur, f"W{i}"], [f"matmul{i}"], name=f"MatMul{i}"))
        out = "logits" if last else f"pre{i}"
        nodes.append(helper.make_node("Add", [f"matmul{i}", f"B{i}"], [out], name=f"Add{i}"))
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"hidden{i}"], name=f"Relu{i}"))
            cur = f"hidden{i}"
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], name="Softmax", axis=1))
    nodes.append(helper.make_node("ArgMax", ["logits"], ["label"], name="ArgMax", axis=1, keepdims=0))
    return helper.make_graph(
        nodes,
        name,
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        outputs=[
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        initializer=inits,
    )


def numpy_forward(layers, x: np.ndarray):
    """Reference forward pass from the exported float32 weights (float64 math)."""
    h = x.astype(np.float64)
    for i, (w, b) in enumerate(layers):
        h = h @ w.astype(np.float32).astype(np.float64) + b.astype(np.float32).astype(np.float64)
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return softmax(h), h.argmax(axis=1), h


def train_digits():
    # X float64 [1797, 64] in 0..16, y int64
    X_tr, X_te, y_tr, y_te = digits_split()
    X_tr = np.ascontiguousarray(X_tr, dtype=np.float64)
    y_tr = np.ascontiguousarray(y_tr, dtype=np.int64)
    data_sha = hashlib.sha256(X_tr.tobytes() + y_tr.tobytes()).hexdigest()

    specs = {
        1: dict(
            algorithm="LogisticRegression",
            settings="sklearn LogisticRegression(solver=lbfgs, multinomial, C=1.0, max_iter=2000); "
                     "features scaled by 1/16 (folded into W0)",
            make=lambda: LogisticRegression(C=1.0, max_iter=2000),
        ),
        2: dict(
            algorithm="MLPClassifier",
            settings="sklearn MLPClassifier(hidden_layer_sizes=(64,), activation=relu, solver=adam, "
                     "alpha=1e-3, max_iter=600, random_state=0); features scaled by 1/16 (folded into W0)",
            make=lambda: MLPClassifier(hidden_layer_sizes=(64,), alpha=1e-3, max_iter=600, random_state=0),
        ),
    }

    results = {}
    for version, spec in specs.items():
        clf = spec["make"]()
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConvergenceWarning)
            clf.fit(X_tr / FEATURE_SCALE, y_tr)
        seconds = time.perf_counter() - t0
        trained_at = trained_at_now()

        if isinstance(clf, LogisticRegression):
            layers = [(clf.coef_.T / FEATURE_SCALE, clf.intercept_)]
        else:
            ws, bs = clf.coefs_, clf.intercepts_
            layers = [(ws[0] / FEATURE_SCALE, bs[0])] + list(zip(ws[1:], bs[1:]))
        layers = [(np.asarray(w, np.float32), np.asarray(b, np.float32)) for w, b in layers]

        probs, labels, logits = numpy_forward(layers, X_te)
        # Sanity: the exported float32 weights reproduce sklearn.
        sk_probs = clf.predict_proba(X_te / FEATURE_SCALE)
        assert np.abs(probs - sk_probs).max() < 1e-4, np.abs(probs - sk_probs).max()
        assert (labels == clf.predict(X_te / FEATURE_SCALE)).all()
        top2 = np.sort(logits, axis=1)[:, -2:]
        assert (top2[:, 1] - top2[:, 0]).min() > 1e-3, "near-tie would make float32 ArgMax ambiguous"
        acc = float((labels == y_te).mean())
        assert acc > 0.9, acc

        meta = {
            "version": version,
            "algorithm": spec["algorithm"],
            "settings": spec["settings"],
            "trained_at": trained_at,
            "training_seconds": round(seconds, 3),
            "heldout_accuracy": round(acc, 6),
            "training_data_sha256": data_sha,
            "training_data_sha256_of": "X_train float64 C-order bytes || y_train int64 bytes (little-endian)",
            "training_rows": int(len(y_tr)),
            "heldout_rows": int(len(y_te)),
            "split": f"sklearn train_test_split(test_size={HELDOUT_FRACTION}, stratify=y, random_state={SPLIT_SEED}) "
                     "on load_digits()",
            "sklearn_version": sklearn.__version__,
        }
        results[version] = dict(layers=layers, probs=probs, labels=labels, meta=meta)
        print(f"digits v{version}: {spec['algorithm']} heldout_accuracy={acc:.4f} "
              f"({seconds:.2f}s, {len(layers)} layer(s))")

    disagree = int((results[1]["labels"] != results[2]["labels"]).sum())
    frac = disagree / len(y_te)
    print(f"digits: v1/v2 disagree on {disagree}/{len(y_te)} held-out rows ({frac:.1%})")
    assert 0.02 <= frac <= 0.06, frac
    return X_te, y_te, results, disagree


def digits_split():
    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, test_size=HELDOUT_FRACTION, stratify=y, random_state=SPLIT_SEED)


def baseline_profile(X: np.ndarray, source: str, max_bins: int = 10) -> dict:
    """The drift baseline of training inputs X [rows, features], as infergate
    reads it (baseline.json): per feature, bin edges e0 < e1 < ... and the
    training fraction of each bin (-inf, e0], (e0, e1], ..., (e_last, inf).
    A feature with at most 20 distinct values gets an edge at each (so that
    the Kolmogorov-Smirnov statistic at the edges is the exact one); others
    get their deciles."""
    features = []
    for j in range(X.shape[1]):
        col = np.asarray(X[:, j], dtype=np.float64)
        distinct = np.unique(col)
        if len(distinct) <= 20:
            edges = distinct
        else:
            edges = np.unique(np.quantile(col, np.linspace(0, 1, max_bins + 1)[1:-1]))
        # side="left": the first edge >= v, i.e. right-closed bins.
        counts = np.bincount(np.searchsorted(edges, col, side="left"), minlength=len(edges) + 1)
        features.append({
            "edges": [float(e) for e in edges],
            "fractions": [float(c) / len(col) for c in counts],
        })
    return {"rows": int(X.shape[0]), "source": source, "inputs": {"input": {"features": features}}}


def write_baselines():
    X_tr, _, _, _ = digits_split()
    profile = baseline_profile(
        X_tr,
        f"training inputs of digits: load_digits(), train_test_split(test_size={HELDOUT_FRACTION}, "
        f"stratify=y, random_state={SPLIT_SEED}), training part",
    )
    for version in (1, 2):
        text = json.dumps(profile, separators=(",", ":"))
        write_text(f"models/digits/{version}/baseline.json", text + "\n")


def export_digits():
    X_te, y_te, results, disagree = train_digits()
    write_baselines()
    for version, r in results.items():
        meta = r["meta"]
        model = make_model(
            digits_graph(r["layers"], f"digits_v{version}"),
            f"digits classifier v{version}: {meta['settings']}",
            meta,
        )
        write_model(f"models/digits/{version}/model.onnx", model)
        write_json(f"models/digits/{version}/metadata.json", meta)

    write_text(
        "models/digits/config.toml",
        '# digits: serve every version found on disk (1 and 2)\nversion_policy = "all"\n'
        "\n"
        "# The input schema: 8x8 images of pixel intensities 0..16, never NaN/Inf.\n"
        "[schema.input]\n"
        "min = 0\n"
        "max = 16\n"
        'nan = "reject"\n'
        "\n"
        "# The deployment gate: a version serves only if, on the held-out sample,\n"
        "# it is at least 90 % accurate, no more than 5 points below the version\n"
        "# serving, and its one-row p99 latency is within 50 ms.\n"
        "[gate]\n"
        'validation = "data/heldout.json"\n'
        'input = "input"\n'
        'output = "label"\n'
        "min_accuracy = 0.9\n"
        "max_accuracy_drop = 0.05\n"
        "max_p99_ms = 50.0\n",
    )

    feats = compact_rows(X_te.astype(np.float32), lambda v: repr(float(v)))
    write_text(
        "models/digits/data/heldout.json",
        '{\n  "features": ' + feats + ',\n  "labels": ' + json.dumps([int(v) for v in y_te]) + "\n}\n",
    )

    parts = []
    for version, r in results.items():
        parts.append(
            f'  "{version}": {{\n    "probabilities": '
            + compact_rows(r["probs"], fnum).replace("\n", "\n  ")
            + ',\n    "labels": ' + json.dumps([int(v) for v in r["labels"]]) + "\n  }"
        )
    parts.append(f'  "disagreement_rows": {disagree}')
    write_text("tests/fixtures/digits_expected.json", "{\n" + ",\n".join(parts) + "\n}\n")
    return results, disagree


# --------------------------------------------------------------------------
# tiny
# --------------------------------------------------------------------------

def export_tiny():
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["input", "two"], ["doubled"], name="Mul"),
            helper.make_node("Add", ["doubled", "one"], ["output"], name="Add"),
        ],
        "tiny",
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 16])],
        outputs=[helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 16])],
        initializer=[f32_init("two", np.array(2.0)), f32_init("one", np.array(1.0))],
    )
    meta = {
        "version": 1,
        "algorithm": "x*2+1",
        "settings": "not trained: output = input * 2 + 1 (Mul then Add with scalar initializers)",
        "trained_at": trained_at_now(),
        "training_seconds": 0.0,
        "heldout_accuracy": None,
        "training_data_sha256": None,
    }
    write_model("models/tiny/1/model.onnx", make_model(graph, "overhead-bound model: output = input*2+1", meta))
    write_json("models/tiny/1/metadata.json", meta)


# --------------------------------------------------------------------------
# types (test only)
# --------------------------------------------------------------------------

TYPES = [
    ("bool", TensorProto.BOOL, np.bool_),
    ("uint8", TensorProto.UINT8, np.uint8),
    ("uint16", TensorProto.UINT16, np.uint16),
    ("uint32", TensorProto.UINT32, np.uint32),
    ("uint64", TensorProto.UINT64, np.uint64),
    ("int8", TensorProto.INT8, np.int8),
    ("int16", TensorProto.INT16, np.int16),
    ("int32", TensorProto.INT32, np.int32),
    ("int64", TensorProto.INT64, np.int64),
    ("fp16", TensorProto.FLOAT16, np.float16),
    ("fp32", TensorProto.FLOAT, np.float32),
    ("fp64", TensorProto.DOUBLE, np.float64),
    ("bytes", TensorProto.STRING, object),
]


def export_types():
    """`types` has every datatype; `types_typed` every one but FP16, which
    gRPC can only carry in raw_input_contents: with it a request whose
    tensors are all in typed `contents` fields can succeed."""
    for name, skip, doc in [
        ("types", None, "every KServe-V2 datatype"),
        ("types_typed", "fp16", "every KServe-V2 datatype gRPC's typed contents carry (all but FP16)"),
    ]:
        nodes, inputs, outputs = [], [], []
        for suffix, elem, _ in TYPES:
            if suffix == skip:
                continue
            nodes.append(helper.make_node("Identity", [f"in_{suffix}"], [f"out_{suffix}"], name=f"Identity_{suffix}"))
            inputs.append(helper.make_tensor_value_info(f"in_{suffix}", elem, ["batch", "n"]))
            outputs.append(helper.make_tensor_value_info(f"out_{suffix}", elem, ["batch", "n"]))
        graph = helper.make_graph(nodes, name, inputs=inputs, outputs=outputs)
        write_model(f"tests/models/{name}/1/model.onnx",
                    make_model(graph, f"test-only: in_<t> -> Identity -> out_<t> for {doc}"))


def export_random_digits():
    """Test-only: the digits network with random weights (seeded), a version
    the deployment gate must refuse (accuracy near 10 %)."""
    rng = np.random.default_rng(7)
    layers = [(rng.normal(0, 0.1, (64, 10)).astype(np.float32), rng.normal(0, 0.1, 10).astype(np.float32))]
    model = make_model(digits_graph(layers, "digits_random"),
                       "test-only: digits with random weights, for the deployment gate",
                       {"trained_at": trained_at_now(), "algorithm": "random weights (not trained)"})
    write_model("tests/models/digits_random/model.onnx", model)


def export_heavy_digits():
    """Test-only: a deliberately slow model with digits' inputs and outputs
    (a shadow slower than the primary): 64 -> 512, then the same 512x512
    layer 16 times, -> 10. About 4 M multiply-adds a row, from 1 MiB of weights."""
    rng = np.random.default_rng(11)
    w_in = rng.normal(0, 0.05, (64, 512)).astype(np.float32)
    w_mid = rng.normal(0, 0.04, (512, 512)).astype(np.float32)
    w_out = rng.normal(0, 0.05, (512, 10)).astype(np.float32)
    inits = [f32_init("W_in", w_in), f32_init("W_mid", w_mid), f32_init("W_out", w_out)]
    nodes = [helper.make_node("MatMul", ["input", "W_in"], ["h0"], name="MatMul_in")]
    for i in range(16):
        nodes.append(helper.make_node("MatMul", [f"h{i}", "W_mid"], [f"m{i}"], name=f"MatMul{i}"))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"h{i + 1}"], name=f"Relu{i}"))
    nodes.append(helper.make_node("MatMul", ["h16", "W_out"], ["logits"], name="MatMul_out"))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], name="Softmax", axis=1))
    nodes.append(helper.make_node("ArgMax", ["logits"], ["label"], name="ArgMax", axis=1, keepdims=0))
    graph = helper.make_graph(
        nodes, "digits_heavy",
        inputs=[helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 64])],
        outputs=[
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 10]),
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
        ],
        initializer=inits,
    )
    model = make_model(graph, "test-only: a slow model with digits' inputs, for shadow overload",
                       {"trained_at": trained_at_now(), "algorithm": "random weights (not trained)"})
    write_model("tests/models/digits_heavy/1/model.onnx", model)


# --------------------------------------------------------------------------
# --check (ONNX Runtime self-check)
# --------------------------------------------------------------------------

def check():
    import onnxruntime as ort

    print(f"--check: onnxruntime {ort.__version__}")

    def session(rel):
        return ort.InferenceSession(str(REPO / rel), providers=["CPUExecutionProvider"])

    heldout = json.loads((REPO / "models/digits/data/heldout.json").read_text())
    expected = json.loads((REPO / "tests/fixtures/digits_expected.json").read_text())
    x = np.asarray(heldout["features"], dtype=np.float32)
    assert x.shape == (len(heldout["labels"]), 64), x.shape
    labels = {}
    for v in ("1", "2"):
        rel = f"models/digits/{v}/model.onnx"
        s = session(rel)
        assert [(i.name, i.type, i.shape) for i in s.get_inputs()] == [("input", "tensor(float)", ["batch", 64])]
        assert [(o.name, o.type, o.shape) for o in s.get_outputs()] == [
            ("probabilities", "tensor(float)", ["batch", 10]),
            ("label", "tensor(int64)", ["batch"]),
        ]
        meta = s.get_modelmeta().custom_metadata_map
        on_disk = json.loads((REPO / f"models/digits/{v}/metadata.json").read_text())
        for key in ("trained_at", "heldout_accuracy", "training_seconds", "training_data_sha256",
                    "algorithm", "settings", "version"):
            assert meta[key] == str(on_disk[key]), (key, meta[key], on_disk[key])
        probs, lab = s.run(None, {"input": x})
        exp_p = np.asarray(expected[v]["probabilities"])
        err = float(np.abs(probs - exp_p).max())
        assert err < 1e-5, (rel, err)
        assert lab.dtype == np.int64 and (lab == np.asarray(expected[v]["labels"])).all(), rel
        # batch of 1 and a different batch size work too
        p1, l1 = s.run(None, {"input": x[:1]})
        assert p1.shape == (1, 10) and l1.shape == (1,)
        labels[v] = lab
        acc = float((lab == np.asarray(heldout["labels"])).mean())
        print(f"  {rel}: ok (max |ort - expected| = {err:.2e}, accuracy {acc:.4f})")
    dis = int((labels["1"] != labels["2"]).sum())
    assert dis == expected["disagreement_rows"], dis
    print(f"  digits disagreement_rows: {dis} ok")

    s = session("models/tiny/1/model.onnx")
    xt = np.arange(48, dtype=np.float32).reshape(3, 16) - 7.5
    (out,) = s.run(["output"], {"input": xt})
    assert out.dtype == np.float32 and np.array_equal(out, xt * 2 + 1)
    print("  models/tiny/1/model.onnx: ok")

    s = session("tests/models/types/1/model.onnx")
    rng = np.random.default_rng(0)
    feeds = {}
    for suffix, _, dt in TYPES:
        shape = (2, 3)
        if suffix == "bool":
            a = rng.integers(0, 2, shape).astype(np.bool_)
        elif suffix == "bytes":
            a = np.array([["", "abc", "héllo ✓"], ["x" * 40, "\x00nul", "z"]], dtype=object)
        elif np.issubdtype(dt, np.integer):
            info = np.iinfo(dt)
            a = np.array([[info.min, 0, info.max], [1, info.max - 1, info.min + 1]], dtype=dt)
        else:
            a = np.array([[0.5, -1.25, np.finfo(dt).max], [np.finfo(dt).tiny, -0.0, 3.140625]], dtype=dt)
        feeds[f"in_{suffix}"] = a
    outs = s.run([f"out_{t[0]}" for t in TYPES], feeds)
    for (suffix, _, dt), out in zip(TYPES, outs):
        a = feeds[f"in_{suffix}"]
        assert out.shape == a.shape, suffix
        if suffix == "bytes":
            assert out.tolist() == a.tolist(), (suffix, out)
        else:
            assert out.dtype == np.dtype(dt) and np.array_equal(out, a), (suffix, out.dtype, out)
    # different [batch, n] per input is allowed
    (o,) = s.run(["out_fp16"], {**feeds, "in_fp16": np.ones((5, 1), np.float16)})
    assert o.shape == (5, 1)
    print(f"  tests/models/types/1/model.onnx: ok ({len(TYPES)} dtypes round-trip)")
    s = session("tests/models/types_typed/1/model.onnx")
    typed = [t for t in TYPES if t[0] != "fp16"]
    assert [i.name for i in s.get_inputs()] == [f"in_{t[0]}" for t in typed]
    outs = s.run([f"out_{t[0]}" for t in typed], {f"in_{t[0]}": feeds[f"in_{t[0]}"] for t in typed})
    assert all(o.tolist() == feeds[f"in_{t[0]}"].tolist() for t, o in zip(typed, outs))
    print(f"  tests/models/types_typed/1/model.onnx: ok ({len(typed)} dtypes round-trip)")
    print("--check: all ok")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true",
                    help="after generating, load and run every model in ONNX Runtime and compare with the fixtures")
    ap.add_argument("--check-only", action="store_true", help="only run the ONNX Runtime self-check")
    ap.add_argument("--random-only", action="store_true",
                    help="only (re)write the test-only digits models (random weights, heavy)")
    ap.add_argument("--types-only", action="store_true",
                    help="only (re)write the test-only identity models (types, types_typed)")
    ap.add_argument("--baselines-only", action="store_true",
                    help="only (re)write the digits drift baselines (models/digits/*/baseline.json)")
    args = ap.parse_args(argv)
    np.random.seed(0)
    if args.baselines_only:
        write_baselines()
        return 0
    if args.types_only:
        export_types()
        return 0
    if args.random_only:
        export_random_digits()
        export_heavy_digits()
        return 0
    if not args.check_only:
        export_digits()
        export_tiny()
        export_types()
        export_random_digits()
        export_heavy_digits()
    if args.check or args.check_only:
        check()
    return 0


if __name__ == "__main__":
    sys.exit(main())
