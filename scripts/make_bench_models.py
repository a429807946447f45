#!/usr/bin/env python3
"""Generate infergate's benchmark ONNX models (random weights, fixed seed).

Run from the repository root, inside a virtual environment made from
scripts/requirements-models.txt:

    python scripts/make_bench_models.py            # (re)generate the models
    python scripts/make_bench_models.py --check    # ... then self-check with ONNX Runtime

The graphs are written by hand with `onnx.helper` (opset 17, IR version 9).
The weights are not trained: they are drawn from a fixed numpy seed with
He-style scaling.  So that the softmax outputs vary with the input (rather
than one class winning every time) for the uniform [0,1) FP32 data the load
generator sends, the MLP folds (x - 0.5) / sqrt(1/12) into its first layer,
and the CNN's last Gemm folds in a standardisation of its pooled features
(statistics from a fixed calibration batch, rounded to 3 significant digits).
Output is byte-for-byte deterministic (no timestamps, no training metadata).

Files written (paths relative to the repo root):

    benches/models/mlp/1/model.onnx   input [batch, 256] -> 1024 -> 1024 -> 10, softmax
    benches/models/cnn/1/model.onnx   input [batch, 3, 64, 64] -> 3 conv blocks -> 10, softmax
    benches/models/README.md is hand-written and NOT generated

These models are for benchmarks only; they are not in the default model
repository (models/) and are not served unless the server is pointed at
benches/models.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 9  # explicit: older runtimes reject the newest IR versions
PRODUCER = "infergate-make_bench_models"
SEED = 20240917
NUM_CLASSES = 10

REPO = Path(__file__).resolve().parent.parent
OUT_DIR = "benches/models"
MLP_REL = f"{OUT_DIR}/mlp/1/model.onnx"
CNN_REL = f"{OUT_DIR}/cnn/1/model.onnx"

MLP_DIMS = [256, 1024, 1024, NUM_CLASSES]
CNN_CHANNELS = [3, 16, 32, 64]
CNN_HW = 64
CALIB_IMAGES = 64
INPUT_MEAN, INPUT_STD = 0.5, float(np.sqrt(1.0 / 12.0))  # of U[0,1), what loadtest sends


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def f32_init(name: str, arr) -> TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(arr, dtype=np.float32), name=name)


def make_model(graph: onnx.GraphProto, doc: str) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name=PRODUCER,
        producer_version="1",
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    return model


def write_model(rel: str, model: onnx.ModelProto) -> Path:
    onnx.checker.check_model(model, full_check=True)
    path = REPO / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    data = model.SerializeToString(deterministic=True)
    path.write_bytes(data)
    print(f"wrote {rel} ({len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]})")
    return path


def he(rng: np.random.Generator, shape, fan_in: int, gain: float = 2.0) -> np.ndarray:
    """Normal(0, gain/fan_in) weights; gain 2 (He) before a ReLU, 1 for the logits."""
    return (rng.standard_normal(shape) * np.sqrt(gain / fan_in)).astype(np.float32)


def small_bias(rng: np.random.Generator, n: int) -> np.ndarray:
    return (rng.standard_normal(n) * 0.01).astype(np.float32)


# --------------------------------------------------------------------------
# weights (one RNG per model, so each model's weights are independent of the other)
# --------------------------------------------------------------------------

def mlp_weights():
    rng = np.random.default_rng([SEED, 1])
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(MLP_DIMS[:-1], MLP_DIMS[1:])):
        last = i == len(MLP_DIMS) - 2
        w = he(rng, (fan_in, fan_out), fan_in, gain=1.0 if last else 2.0)  # [in, out]
        layers.append((w, small_bias(rng, fan_out)))
    # Fold the standardisation of U[0,1) inputs, (x - 0.5) / sqrt(1/12), into layer 1
    # (exact for a Gemm): the load generator sends uniform [0,1) FP32, and without it the
    # shared +0.5 offset makes one class win for every input.
    w, b = layers[0]
    w = (w / np.float32(INPUT_STD)).astype(np.float32)
    b = (b - np.float32(INPUT_MEAN) * w.sum(axis=0, dtype=np.float64)).astype(np.float32)
    layers[0] = (w, b)
    return layers


def sig3(a: np.ndarray) -> np.ndarray:
    """Round to 3 significant digits, so last-bit differences in the calibration
    arithmetic (BLAS, CPU) cannot change the bytes of the model."""
    return np.array([float(f"{v:.3g}") for v in np.asarray(a, np.float64).ravel()]).reshape(np.shape(a))


def cnn_weights():
    rng = np.random.default_rng([SEED, 2])
    convs = []
    for c_in, c_out in zip(CNN_CHANNELS[:-1], CNN_CHANNELS[1:]):
        fan_in = c_in * 3 * 3
        convs.append((he(rng, (c_out, c_in, 3, 3), fan_in), small_bias(rng, c_out)))
    c = CNN_CHANNELS[-1]
    w = he(rng, (c, NUM_CLASSES), c, gain=1.0)
    b = small_bias(rng, NUM_CLASSES)
    # After ReLU + GlobalAveragePool the 64 features are all >= 0 with a large common
    # mean and a tiny spread between images (the pool averages 256 positions), so a plain
    # random head gives the same near-one-hot softmax for every input.  Standardise the
    # features (BatchNorm-style, statistics from a fixed calibration batch of U[0,1)
    # images, like the load generator sends) and fold that into the Gemm.
    calib = np.random.default_rng([SEED, 3]).random((CALIB_IMAGES, CNN_CHANNELS[0], CNN_HW, CNN_HW))
    feats = cnn_features(convs, calib)
    mean = sig3(feats.mean(axis=0))
    std = sig3(feats.std(axis=0))
    inv = np.where(std > 1e-6, 1.0 / np.maximum(std, 1e-6), 0.0)  # dead channels -> weight 0
    w_f = w.astype(np.float64) * inv[:, None]
    b_f = b.astype(np.float64) - mean @ w_f
    fc = (w_f.astype(np.float32), b_f.astype(np.float32))
    return convs, fc


# --------------------------------------------------------------------------
# graphs
# --------------------------------------------------------------------------

def mlp_graph(layers) -> onnx.GraphProto:
    nodes, inits = [], []
    cur = "input"
    for i, (w, b) in enumerate(layers):
        last = i == len(layers) - 1
        inits += [f32_init(f"fc{i}.weight", w), f32_init(f"fc{i}.bias", b)]
        out = "logits" if last else f"fc{i}"
        nodes.append(helper.make_node("Gemm", [cur, f"fc{i}.weight", f"fc{i}.bias"], [out],
                                      name=f"fc{i}"))
        if not last:
            nodes.append(helper.make_node("Relu", [out], [f"relu{i}"], name=f"relu{i}"))
            cur = f"relu{i}"
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1, name="softmax"))
    return helper.make_graph(
        nodes,
        "bench_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", MLP_DIMS[0]])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", NUM_CLASSES])],
        initializer=inits,
    )


def cnn_graph(convs, fc) -> onnx.GraphProto:
    nodes, inits = [], []
    cur = "input"
    for i, (w, b) in enumerate(convs):
        last = i == len(convs) - 1
        inits += [f32_init(f"conv{i}.weight", w), f32_init(f"conv{i}.bias", b)]
        nodes.append(helper.make_node("Conv", [cur, f"conv{i}.weight", f"conv{i}.bias"], [f"conv{i}"],
                                      kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1],
                                      name=f"conv{i}"))
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"], name=f"relu{i}"))
        if last:
            nodes.append(helper.make_node("GlobalAveragePool", [f"relu{i}"], ["gap"], name="gap"))
        else:
            nodes.append(helper.make_node("MaxPool", [f"relu{i}"], [f"pool{i}"],
                                          kernel_shape=[2, 2], strides=[2, 2], name=f"pool{i}"))
            cur = f"pool{i}"
    nodes.append(helper.make_node("Flatten", ["gap"], ["features"], axis=1, name="flatten"))
    w, b = fc
    inits += [f32_init("fc.weight", w), f32_init("fc.bias", b)]
    nodes.append(helper.make_node("Gemm", ["features", "fc.weight", "fc.bias"], ["logits"], name="fc"))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1, name="softmax"))
    return helper.make_graph(
        nodes,
        "bench_cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", CNN_CHANNELS[0], CNN_HW, CNN_HW])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", NUM_CLASSES])],
        initializer=inits,
    )


# --------------------------------------------------------------------------
# numpy reference forward passes (used by --check)
# --------------------------------------------------------------------------

def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def mlp_forward(layers, x: np.ndarray) -> np.ndarray:
    h = x.astype(np.float64)
    for i, (w, b) in enumerate(layers):
        h = h @ w + b
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return softmax(h)


def cnn_features(convs, x: np.ndarray) -> np.ndarray:
    """Conv blocks + GlobalAveragePool, float64: [n, 3, 64, 64] -> [n, 64]."""
    from numpy.lib.stride_tricks import sliding_window_view

    h = np.asarray(x, np.float64)
    for i, (w, b) in enumerate(convs):
        p = np.pad(h, ((0, 0), (0, 0), (1, 1), (1, 1)))
        win = sliding_window_view(p, (3, 3), axis=(2, 3))            # [n, c, H, W, 3, 3]
        h = np.einsum("nchwij,ocij->nohw", win, w.astype(np.float64), optimize=True)
        h = np.maximum(h + b[None, :, None, None], 0.0)
        if i < len(convs) - 1:
            n, c, hh, ww = h.shape
            h = h.reshape(n, c, hh // 2, 2, ww // 2, 2).max(axis=(3, 5))
    return h.mean(axis=(2, 3))


def cnn_forward(convs, fc, x: np.ndarray) -> np.ndarray:
    w, b = fc
    return softmax(cnn_features(convs, x) @ w + b)


# --------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------

def export():
    write_model(MLP_REL, make_model(
        mlp_graph(mlp_weights()),
        "benchmark model (random weights, not trained): MLP 256-1024-1024-10, ReLU, softmax"))
    convs, fc = cnn_weights()
    write_model(CNN_REL, make_model(
        cnn_graph(convs, fc),
        "benchmark model (random weights, not trained): 3x [Conv3x3+ReLU(+MaxPool2)] 3-16-32-64, "
        "GlobalAveragePool, Gemm 64-10, softmax"))


# --------------------------------------------------------------------------
# --check (ONNX Runtime self-check + rough single-thread timings)
# --------------------------------------------------------------------------

def check():
    import onnxruntime as ort

    print(f"--check: onnxruntime {ort.__version__}, numpy {np.__version__}")

    def session(rel):
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        return ort.InferenceSession(str(REPO / rel), so, providers=["CPUExecutionProvider"])

    mlp = mlp_weights()
    convs, fc = cnn_weights()
    cases = [
        (MLP_REL, [MLP_DIMS[0]], lambda x: mlp_forward(mlp, x)),
        (CNN_REL, [CNN_CHANNELS[0], CNN_HW, CNN_HW], lambda x: cnn_forward(convs, fc, x)),
    ]
    rng = np.random.default_rng(0)
    timings = []
    for rel, feat_shape, reference in cases:
        s = session(rel)
        ins = [(i.name, i.type, i.shape) for i in s.get_inputs()]
        outs = [(o.name, o.type, o.shape) for o in s.get_outputs()]
        assert ins == [("input", "tensor(float)", ["batch", *feat_shape])], ins
        assert outs == [("probabilities", "tensor(float)", ["batch", NUM_CLASSES])], outs
        # U[0,1) is what the load generator sends; N(0,1) just has to work
        for dist, batch in (("U[0,1)", 1), ("U[0,1)", 8), ("N(0,1)", 8)):
            shape = (batch, *feat_shape)
            x = (rng.random(shape) if dist == "U[0,1)" else rng.standard_normal(shape)).astype(np.float32)
            (p,) = s.run(["probabilities"], {"input": x})
            assert p.dtype == np.float32 and p.shape == (batch, NUM_CLASSES), (rel, p.dtype, p.shape)
            assert np.isfinite(p).all(), rel
            sums = p.sum(axis=1)
            assert np.allclose(sums, 1.0, atol=1e-5), (rel, sums)
            err = float(np.abs(p - reference(x)).max())
            assert err < 1e-4, (rel, batch, err)
            pmax = p.max(axis=1)
            if batch == 8 and dist == "U[0,1)":
                # not degenerate: rows differ, neither one-hot nor uniform, not one class for all
                assert float(np.ptp(p, axis=0).max()) > 1e-2, (rel, "rows (nearly) identical")
                assert 0.15 < float(pmax.mean()) < 0.95, (rel, pmax)
                assert len(set(p.argmax(axis=1).tolist())) > 1, (rel, "one class for every row")
            if batch == 8:
                print(f"  {rel}: ok {dist} batch {batch} (max |ort - numpy| = {err:.1e}; "
                      f"max prob {pmax.min():.3f}..{pmax.max():.3f}, argmax {p.argmax(axis=1).tolist()})")

        # rough in-process timings, single thread
        for batch in (1, 8, 64):
            x = rng.random((batch, *feat_shape)).astype(np.float32)
            feed = {"input": x}
            for _ in range(3):
                s.run(None, feed)
            # ~0.5 s per measurement, at least 5 runs
            t0 = time.perf_counter()
            s.run(None, feed)
            one = time.perf_counter() - t0
            n = max(5, min(2000, int(0.5 / max(one, 1e-6))))
            samples = []
            for _ in range(n):
                t0 = time.perf_counter()
                s.run(None, feed)
                samples.append(time.perf_counter() - t0)
            med = float(np.median(samples)) * 1e3
            timings.append((rel, batch, med, n))

    print("rough single-thread timings (onnxruntime CPU, intra_op_num_threads=1, median):")
    for rel, batch, med, n in timings:
        print(f"  {rel:34s} batch {batch:3d}: {med:9.3f} ms/run  {med / batch:8.3f} ms/row  (n={n})")
    print("--check: all ok")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="after writing, load the models in onnxruntime, verify them and print timings")
    args = ap.parse_args(argv)
    export()
    if args.check:
        check()
    return 0


if __name__ == "__main__":
    sys.exit(main())
