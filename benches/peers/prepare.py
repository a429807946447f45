"""Set-up step of benches/peers.sh (run with the peers venv's Python).

  prepare.py payloads DIR
      Writes the request bodies the lean clients send, one set per payload:
        tiny, mlp, cnn         the model's input, shape [1, ...dims]
        mlp-bare, cnn-bare     as many FP32 values as mlp's / cnn's input,
                               shape [1, N], for the bare server's `tiny`
      as NAME.json (V2 JSON), NAME.bin (binary tensor extension: JSON header
      + raw little-endian bytes; header length in NAME.meta.json) and
      NAME.MODEL.grpc (a gRPC message: 5-byte prefix + ModelInferRequest with
      raw_input_contents, one per model name it is sent to), and
      NAME.meta.json with the expected outputs: input*2+1 for tiny and the
      bare payloads, onnxruntime's own result (in-process) for mlp and cnn.

  prepare.py repos DIR SITE_PACKAGES MLSERVER_HTTP MLSERVER_GRPC MLSERVER_METRICS MLSERVER_WORKERS
      Writes DIR/triton (tiny, tiny_cached with the response cache, mlp,
      cnn: Python-backend models running the ONNX file) and DIR/mlserver
      (settings.json and the three models on the onnx_runtime.OnnxRuntime
      runtime).

Names, datatypes and shapes come from the ONNX files themselves.
"""

import json
import os
import shutil
import sys

import numpy as np
import onnxruntime as ort

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ONNX = {
    "tiny": os.path.join(ROOT, "models/tiny/1/model.onnx"),
    "mlp": os.path.join(ROOT, "benches/models/mlp/1/model.onnx"),
    "cnn": os.path.join(ROOT, "benches/models/cnn/1/model.onnx"),
}
# The model names each payload is sent to over gRPC (the name is inside the
# protobuf message; over HTTP it is in the URL).
GRPC_NAMES = {"tiny": ["tiny", "tiny_cached"], "mlp": ["mlp"], "cnn": ["cnn"], "mlp-bare": ["tiny"], "cnn-bare": ["tiny"]}


def signature(model):
    """(input name, dims after the batch dim, [output names and dims]) of an FP32 model."""
    s = ort.InferenceSession(ONNX[model], providers=["CPUExecutionProvider"])
    (i,) = s.get_inputs()
    for t in [i, *s.get_outputs()]:
        if t.type != "tensor(float)":
            sys.exit(f"prepare: {model}: {t.name} is {t.type}, expected FP32")
        if isinstance(t.shape[0], int) or not all(isinstance(d, int) for d in t.shape[1:]):
            sys.exit(f"prepare: {model}: {t.name} has shape {t.shape}, expected [batch, fixed dims...]")
    return i.name, list(i.shape[1:]), [(o.name, list(o.shape[1:])) for o in s.get_outputs()]


def run_ort(model, x):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    s = ort.InferenceSession(ONNX[model], opts, providers=["CPUExecutionProvider"])
    (i,) = s.get_inputs()
    return {o.name: y for o, y in zip(s.get_outputs(), s.run(None, {i.name: x}))}


def payloads(out):
    from tritonclient.grpc import service_pb2

    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(1)
    for name in ["tiny", "mlp", "cnn", "mlp-bare", "cnn-bare"]:
        model = name.split("-")[0]
        input_name, dims, outputs = signature(model)
        n = int(np.prod(dims))
        if model == "tiny":
            # Quarters: exact in FP32, so input*2+1 must come back exactly.
            flat = ((np.arange(n) - n // 2) / 4).astype(np.float32)
        else:
            # Uniform [0, 1) (what the models are tuned for) in steps of
            # 1/256: exact in FP32 and short in JSON.
            flat = (rng.integers(0, 256, n) / 256).astype(np.float32)
        if name.endswith("-bare"):
            shape, outputs = [1, n], [("output", [n])]
            expected = {"output": flat * 2 + 1}
        else:
            shape = [1, *dims]
            expected = {"output": flat * 2 + 1} if model == "tiny" else run_ort(model, flat.reshape(shape))
        raw = flat.astype("<f4").tobytes()
        tensor = {"name": input_name, "shape": shape, "datatype": "FP32"}
        with open(f"{out}/{name}.json", "w") as f:
            json.dump({"inputs": [{**tensor, "data": [float(v) for v in flat]}]}, f, separators=(",", ":"))
        header = json.dumps(
            {
                "inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
                "outputs": [{"name": o, "parameters": {"binary_data": True}} for o, _ in outputs],
            },
            separators=(",", ":"),
        ).encode()
        with open(f"{out}/{name}.bin", "wb") as f:
            f.write(header + raw)
        for served in GRPC_NAMES[name]:
            req = service_pb2.ModelInferRequest(
                model_name=served,
                inputs=[service_pb2.ModelInferRequest.InferInputTensor(name=input_name, datatype="FP32", shape=shape)],
                raw_input_contents=[raw],
            )
            msg = req.SerializeToString()
            with open(f"{out}/{name}.{served}.grpc", "wb") as f:
                f.write(b"\x00" + len(msg).to_bytes(4, "big") + msg)
        meta = {
            "input": input_name,
            "shape": shape,
            "header_length": len(header),
            "outputs": {o: {"shape": [1, *d], "expected": [float(v) for v in np.asarray(expected[o]).ravel()]} for o, d in outputs},
        }
        with open(f"{out}/{name}.meta.json", "w") as f:
            json.dump(meta, f)


TRITON_CONFIG = """name: "{name}"
backend: "python"
# [1, ...dims] requests, as on every other server; batch dim up to 64.
max_batch_size: 64
input [{{ name: "{input}" data_type: TYPE_FP32 dims: {dims} }}]
output [{outputs}]
instance_group [{{ kind: KIND_CPU count: 1 }}]
# No queue delay: it batches what is already waiting (at c=1, nothing).
dynamic_batching {{ }}
{extra}"""


def repos(out, site_packages, http, grpc, metrics, workers):
    with open(os.path.join(os.path.dirname(__file__), "triton_model.py")) as f:
        model_py = f"import sys; sys.path.insert(0, {site_packages!r})  # the peers venv\n" + f.read()
    for name, model in [("tiny", "tiny"), ("tiny_cached", "tiny"), ("mlp", "mlp"), ("cnn", "cnn")]:
        input_name, dims, outputs = signature(model)
        d = f"{out}/triton/{name}"
        os.makedirs(f"{d}/1", exist_ok=True)
        shutil.copy(ONNX[model], f"{d}/1/model.onnx")
        with open(f"{d}/1/model.py", "w") as f:
            f.write(model_py)
        with open(f"{d}/config.pbtxt", "w") as f:
            f.write(
                TRITON_CONFIG.format(
                    name=name,
                    input=input_name,
                    dims=dims,
                    outputs=", ".join(f'{{ name: "{o}" data_type: TYPE_FP32 dims: {od} }}' for o, od in outputs),
                    # The server's own response cache: identical requests are
                    # answered from it, the model runs once.
                    extra="response_cache { enable: true }\n" if name == "tiny_cached" else "",
                )
            )
    os.makedirs(f"{out}/mlserver", exist_ok=True)
    with open(f"{out}/mlserver/settings.json", "w") as f:
        json.dump(
            {
                "debug": False,
                "host": "127.0.0.1",
                "http_port": int(http),
                "grpc_port": int(grpc),
                "metrics_port": int(metrics),
                # 0: inference in the server process (on one core a worker
                # process only adds a hop); MLSERVER_WORKERS changes it.
                "parallel_workers": int(workers),
                "load_models_at_startup": True,
            },
            f,
            indent=1,
        )
    for model in ["tiny", "mlp", "cnn"]:
        input_name, dims, outputs = signature(model)
        d = f"{out}/mlserver/{model}"
        os.makedirs(d, exist_ok=True)
        shutil.copy(ONNX[model], f"{d}/model.onnx")
        with open(f"{d}/model-settings.json", "w") as f:
            json.dump(
                {
                    "name": model,
                    "implementation": "onnx_runtime.OnnxRuntime",
                    "parameters": {"uri": "./model.onnx"},
                    "inputs": [{"name": input_name, "datatype": "FP32", "shape": [-1, *dims]}],
                    "outputs": [{"name": o, "datatype": "FP32", "shape": [-1, *od]} for o, od in outputs],
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    if sys.argv[1:2] == ["payloads"] and len(sys.argv) == 3:
        payloads(sys.argv[2])
    elif sys.argv[1:2] == ["repos"] and len(sys.argv) == 8:
        repos(*sys.argv[2:])
    else:
        sys.exit(__doc__)
