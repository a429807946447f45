"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/) from
the repository's own models and from requests as the tests send them.

    .venv/bin/python fuzz/seed.py
"""

import gzip
import json
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
from tritonclient.grpc import service_pb2

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"


def put(target: str, name: str, data: bytes) -> None:
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


tiny = {"id": "1", "inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": list(range(16))}]}
nested = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "INT64", "data": [[1, 2], [3, 4]],
                      "parameters": {"binary_data_size": None}}],
          "outputs": [{"name": "y", "parameters": {"binary_data": True}}], "parameters": {"timeout": 1000}}
words = {"inputs": [{"name": "s", "shape": [2], "datatype": "BYTES", "data": ["a", "bc"]}]}
for i, body in enumerate([tiny, nested, words]):
    put("http_infer", f"json-{i}", b"\x00\x00" + json.dumps(body).encode())
head = json.dumps({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32",
                               "parameters": {"binary_data_size": 16}}]}).encode()
put("http_infer", "binary", struct.pack("<H", len(head)) + head + np.arange(4, dtype="<f4").tobytes())

req = service_pb2.ModelInferRequest(model_name="tiny", id="g", inputs=[
    service_pb2.ModelInferRequest.InferInputTensor(name="input", datatype="FP32", shape=[1, 16])],
    raw_input_contents=[np.arange(16, dtype="<f4").tobytes()])
req.parameters["timeout"].int64_param = 1000
put("grpc_infer", "raw", req.SerializeToString())
typed = service_pb2.ModelInferRequest(model_name="digits", inputs=[
    service_pb2.ModelInferRequest.InferInputTensor(
        name="input", datatype="FP32", shape=[1, 4],
        contents=service_pb2.InferTensorContents(fp32_contents=[1, 2, 3, 4]))])
put("grpc_infer", "typed", typed.SerializeToString())

body = json.dumps(tiny).encode()
put("compressed_body", "gzip", gzip.compress(body))
put("compressed_body", "zlib", zlib.compress(body))

for path in sorted(ROOT.glob("models/*/config.toml")) + sorted(ROOT.glob("benches/models/*/config.toml")):
    put("config_toml", f"{path.parent.name}.toml", path.read_bytes())
for path in sorted(ROOT.glob("models/*/*/baseline.json"))[:3]:
    put("baseline_json", f"{path.parent.parent.name}-{path.parent.name}.json", path.read_bytes())

put("feedback_body", "labels", json.dumps({"labels": [{"id": "a", "label": 3}, {"id": "b", "label": [1, 2]},
                                                       {"id": "c", "label": 0.5}]}).encode())
print("seeds:", sum(1 for _ in CORPUS.rglob("*") if _.is_file()))
