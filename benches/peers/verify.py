"""Correctness check of benches/peers.sh, before any load: sends the exact
request files the lean clients will send (payloads from prepare.py) and
checks the answer's values, not only the status: input*2+1 for tiny and the
bare payloads, onnxruntime's in-process result for mlp and cnn.

  verify.py PAYLOADS SERVER PAYLOAD MODEL HTTP_PORT GRPC_PORT PROTOCOL...

PROTOCOL: http-json, http-binary, grpc. Prints one JSON line per protocol
(with response_bytes: the gRPC message length the h2load rows are checked
against, since h2load counts a gRPC error, HTTP 200 with a grpc-status
trailer, as a success). Exits 1 on the first wrong answer.
"""

import json
import sys
import urllib.error
import urllib.request

import numpy as np

GRPC_METHOD = "/inference.GRPCInferenceService/ModelInfer"


def fail(msg):
    print(f"verify: FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def post(url, body, headers):
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()
    except OSError as e:
        fail(f"{url}: {e}")


def check(what, meta, got):
    """got: {output name: (shape, flat float32 array)}"""
    for name, want in meta["outputs"].items():
        if name not in got:
            fail(f"{what}: no output {name!r} in the answer (got {sorted(got)})")
        shape, values = got[name]
        if list(shape) != want["shape"]:
            fail(f"{what}: output {name} has shape {list(shape)}, expected {want['shape']}")
        expected = np.asarray(want["expected"], dtype=np.float32)
        # tiny: exact (quarters in, x*2+1 out); models: the same ORT graph.
        if not np.allclose(values, expected, rtol=1e-4, atol=1e-6):
            bad = int(np.argmax(np.abs(values - expected)))
            fail(f"{what}: output {name}[{bad}] = {values[bad]}, expected {expected[bad]}")


def http_json(base, model, payload, meta):
    status, _, body = post(f"{base}/v2/models/{model}/infer", open(f"{payload}.json", "rb").read(), {"Content-Type": "application/json"})
    if status != 200:
        fail(f"http-json: HTTP {status}: {body[:300]!r}")
    r = json.loads(body)
    return len(body), {o["name"]: (o["shape"], np.asarray(o["data"], dtype=np.float32).ravel()) for o in r["outputs"]}


def http_binary(base, model, payload, meta):
    headers = {"Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(meta["header_length"])}
    status, rh, body = post(f"{base}/v2/models/{model}/infer", open(f"{payload}.bin", "rb").read(), headers)
    if status != 200:
        fail(f"http-binary: HTTP {status}: {body[:300]!r}")
    rh = {k.lower(): v for k, v in rh.items()}
    n = int(rh.get("inference-header-content-length", len(body)))
    r, rest, got = json.loads(body[:n]), body[n:], {}
    for o in r["outputs"]:
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is None:
            fail(f"http-binary: output {o['name']} came back as JSON, not binary: the server ignored binary_data")
        got[o["name"]] = (o["shape"], np.frombuffer(rest[:size], dtype="<f4"))
        rest = rest[size:]
    return len(body), got


def grpc(port, model, payload, meta):
    import grpc as grpcio
    from tritonclient.grpc import service_pb2

    msg = open(f"{payload}.{model}.grpc", "rb").read()[5:]
    with grpcio.insecure_channel(f"127.0.0.1:{port}") as ch:
        # No serializers: the bytes on the wire are the file's, as with h2load.
        call = ch.unary_unary(GRPC_METHOD, request_serializer=None, response_deserializer=None)
        try:
            raw = call(msg, timeout=30)
        except grpcio.RpcError as e:
            fail(f"grpc: {e.code()}: {e.details()}")
    r = service_pb2.ModelInferResponse.FromString(raw)
    got = {}
    for k, o in enumerate(r.outputs):
        if r.raw_output_contents:
            values = np.frombuffer(r.raw_output_contents[k], dtype="<f4")
        else:
            values = np.asarray(o.contents.fp32_contents, dtype=np.float32)
        got[o.name] = (list(o.shape), values)
    return 5 + len(raw), got


def main():
    if len(sys.argv) < 8:
        sys.exit(__doc__)
    payloads, server, payload, model, http_port, grpc_port, *protocols = sys.argv[1:]
    meta = json.load(open(f"{payloads}/{payload}.meta.json"))
    base = f"http://127.0.0.1:{http_port}"
    for protocol in protocols:
        what = f"{server} {model} ({payload} payload) {protocol}"
        if protocol == "http-json":
            size, got = http_json(base, model, f"{payloads}/{payload}", meta)
        elif protocol == "http-binary":
            size, got = http_binary(base, model, f"{payloads}/{payload}", meta)
        elif protocol == "grpc":
            size, got = grpc(grpc_port, model, f"{payloads}/{payload}", meta)
        else:
            fail(f"unknown protocol {protocol}")
        check(what, meta, got)
        print(json.dumps({"server": server, "model": model, "payload": payload, "protocol": protocol, "ok": True, "response_bytes": size}))


if __name__ == "__main__":
    main()
