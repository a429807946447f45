"""Compatibility of infergate with the standard client, tritonclient[http,grpc].

Health, metadata, inference (HTTP JSON, HTTP binary tensor extension, gRPC),
output selection, error reporting and statistics. Repository control is in
test_repository.py, the datatype round trips in test_types.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from _support import (
    GRPC,
    HTTP_BINARY,
    HTTP_JSON,
    MODES,
    PROTOCOLS,
    client_for,
    expect_error,
    header,
    http_call,
    infer,
    json_body,
    make_input,
    make_output,
    raises_server_error,
    response_of,
)

ROWS = 50
DIGITS_OUTPUTS = ["probabilities", "label"]


# ---------------------------------------------------------------- health


def test_http_health_endpoints_answer_200_with_empty_body(server):
    for path in ("/v2/health/live", "/v2/health/ready"):
        status, _, body = http_call(server.base, "GET", path)
        assert status == 200, path
        assert body == b"", path


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_server_live_and_ready(request, protocol):
    client = client_for(request, protocol)
    assert client.is_server_live() is True
    assert client.is_server_ready() is True


def test_server_metadata_http(http_client):
    meta = http_client.get_server_metadata()
    assert meta["name"] == "infergate"
    assert isinstance(meta["version"], str) and meta["version"]
    assert {"binary_tensor_data", "model_repository", "statistics"} <= set(meta["extensions"])


def test_server_metadata_grpc(grpc_client, http_client):
    meta = grpc_client.get_server_metadata()
    assert meta.name == "infergate"
    assert meta.version == http_client.get_server_metadata()["version"]
    assert {"binary_tensor_data", "model_repository", "statistics"} <= set(meta.extensions)


# ---------------------------------------------------------------- model metadata

DIGITS_SIGNATURE = {
    "inputs": [("input", "FP32", [-1, 64])],
    "outputs": [("probabilities", "FP32", [-1, 10]), ("label", "INT64", [-1])],
}
TINY_SIGNATURE = {
    "inputs": [("input", "FP32", [-1, 16])],
    "outputs": [("output", "FP32", [-1, 16])],
}


def _metadata(client, protocol, model, version=""):
    """Model metadata as a plain dict with int shapes, either protocol."""
    m = client.get_model_metadata(model, version)
    if protocol == "http":
        tensors = lambda ts: [(t["name"], t["datatype"], list(t["shape"])) for t in ts]  # noqa: E731
        return {
            "name": m["name"],
            "versions": list(m["versions"]),
            "platform": m["platform"],
            "inputs": tensors(m["inputs"]),
            "outputs": tensors(m["outputs"]),
        }
    tensors = lambda ts: [(t.name, t.datatype, list(t.shape)) for t in ts]  # noqa: E731
    return {
        "name": m.name,
        "versions": list(m.versions),
        "platform": m.platform,
        "inputs": tensors(m.inputs),
        "outputs": tensors(m.outputs),
    }


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("version", ["", "1", "2"])
def test_digits_metadata(request, protocol, version):
    meta = _metadata(client_for(request, protocol), protocol, "digits", version)
    assert meta["name"] == "digits"
    assert meta["versions"] == ["1", "2"]
    assert meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == DIGITS_SIGNATURE["inputs"]
    assert meta["outputs"] == DIGITS_SIGNATURE["outputs"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_tiny_and_types_metadata(request, protocol):
    client = client_for(request, protocol)
    tiny = _metadata(client, protocol, "tiny")
    assert tiny["versions"] == ["1"]
    assert tiny["inputs"] == TINY_SIGNATURE["inputs"]
    assert tiny["outputs"] == TINY_SIGNATURE["outputs"]

    types = _metadata(client, protocol, "types", "1")
    suffixes = ["bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16",
                "int32", "int64", "fp16", "fp32", "fp64", "bytes"]
    datatypes = [s.upper() for s in suffixes]
    assert types["inputs"] == [(f"in_{s}", d, [-1, -1]) for s, d in zip(suffixes, datatypes)]
    assert types["outputs"] == [(f"out_{s}", d, [-1, -1]) for s, d in zip(suffixes, datatypes)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_metadata_of_unknown_model_or_version(request, protocol):
    client = client_for(request, protocol)
    raises_server_error(lambda: client.get_model_metadata("no_such_model"),
                        protocol, "not_found", "no_such_model")
    raises_server_error(lambda: client.get_model_metadata("digits", "7"),
                        protocol, "not_found", "digits", "7")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_model_ready(request, protocol):
    client = client_for(request, protocol)
    for model, version in [("digits", ""), ("digits", "1"), ("digits", "2"),
                           ("tiny", ""), ("tiny", "1"), ("types", "1")]:
        assert client.is_model_ready(model, version) is True, (model, version)


def test_model_ready_unknown_http(http_client):
    # tritonclient.http maps any non-200 answer to False.
    assert http_client.is_model_ready("no_such_model") is False
    assert http_client.is_model_ready("digits", "7") is False


def test_model_ready_unknown_http_status(server):
    status, _, body = http_call(server.base, "GET", "/v2/models/no_such_model/ready")
    assert status == 404
    assert "no_such_model" in json_body(body)["error"]
    status, _, body = http_call(server.base, "GET", "/v2/models/digits/versions/7/ready")
    assert status == 404
    assert "7" in json_body(body)["error"]


def test_model_ready_unknown_grpc(grpc_client):
    raises_server_error(lambda: grpc_client.is_model_ready("no_such_model"),
                        "grpc", "not_found", "no_such_model")
    raises_server_error(lambda: grpc_client.is_model_ready("digits", "7"),
                        "grpc", "not_found", "digits", "7")


# ---------------------------------------------------------------- digits inference


@pytest.fixture(scope="module")
def digits_batch(heldout, digits_expected):
    """The first ROWS held-out rows, and what each version must answer."""
    x = heldout["features"][:ROWS]
    expected = {
        v: {
            "probabilities": digits_expected[v]["probabilities"][:ROWS],
            "labels": digits_expected[v]["labels"][:ROWS],
        }
        for v in ("1", "2")
    }
    # Routing is only observable if the versions disagree on these rows.
    assert (expected["1"]["labels"] != expected["2"]["labels"]).any()
    return x, expected


@pytest.mark.parametrize("version", ["1", "2", ""], ids=["v1", "v2", "default"])
@pytest.mark.parametrize("mode", MODES)
def test_digits_heldout(request, mode, version, digits_batch):
    x, expected = digits_batch
    served = version or "2"  # no version: the newest ready one
    request_id = f"digits-{mode}-{served}-{version or 'default'}"
    result = infer(request, mode, "digits", {"input": x}, version=version,
                   outputs=DIGITS_OUTPUTS if mode == HTTP_JSON else None,
                   request_id=request_id)

    resp = response_of(result, mode)
    assert resp["model_name"] == "digits"
    assert resp["model_version"] == served
    assert resp["id"] == request_id
    assert sorted(resp["outputs"]) == sorted(DIGITS_OUTPUTS)

    probabilities = result.as_numpy("probabilities")
    labels = result.as_numpy("label")
    assert probabilities.dtype == np.float32 and probabilities.shape == (ROWS, 10)
    assert labels.dtype == np.int64 and labels.shape == (ROWS,)
    np.testing.assert_allclose(probabilities, expected[served]["probabilities"], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(labels, expected[served]["labels"])
    other = "1" if served == "2" else "2"
    assert (labels != expected[other]["labels"]).any(), "answered by the wrong version"


@pytest.mark.parametrize("mode", MODES)
def test_digits_single_row(request, mode, heldout, digits_expected):
    """A batch of one (the shape [1, 64] is the most common client call)."""
    x = heldout["features"][3:4]  # a row v1 and v2 disagree on
    for version in ("1", "2"):
        result = infer(request, mode, "digits", {"input": x}, version=version,
                       outputs=DIGITS_OUTPUTS)
        assert result.as_numpy("label").tolist() == [int(digits_expected[version]["labels"][3])]


@pytest.mark.parametrize("mode", MODES)
def test_no_request_id_gets_one_made(request, mode, heldout):
    """Triton leaves the id empty; infergate makes one (a UUIDv7), so that a
    label can be sent for the answer later, and the client reads it as any id."""
    ids = set()
    for _ in range(3):
        result = infer(request, mode, "digits", {"input": heldout["features"][:2]},
                       outputs=DIGITS_OUTPUTS)
        made = response_of(result, mode)["id"]
        assert len(made) == 36 and made[14] == "7", made
        ids.add(made)
    assert len(ids) == 3


# ---------------------------------------------------------------- output selection


@pytest.mark.parametrize("mode", MODES)
def test_only_requested_output_returned(request, mode, digits_batch):
    x, expected = digits_batch
    result = infer(request, mode, "digits", {"input": x}, version="1", outputs=["label"])
    assert response_of(result, mode)["outputs"] == ["label"]
    assert result.as_numpy("probabilities") is None
    np.testing.assert_array_equal(result.as_numpy("label"), expected["1"]["labels"])

    result = infer(request, mode, "digits", {"input": x}, version="1", outputs=["probabilities"])
    assert response_of(result, mode)["outputs"] == ["probabilities"]
    assert result.as_numpy("label") is None
    np.testing.assert_allclose(result.as_numpy("probabilities"),
                               expected["1"]["probabilities"], rtol=0, atol=1e-5)


def test_http_per_output_binary_flag(http_client, digits_batch):
    """probabilities as binary, label as JSON in one response."""
    x, expected = digits_batch
    result = http_client.infer(
        "digits",
        [make_input(HTTP_BINARY, "input", x)],
        model_version="2",
        outputs=[make_output(HTTP_BINARY, "probabilities", binary=True),
                 make_output(HTTP_BINARY, "label", binary=False)],
    )
    outputs = {o["name"]: o for o in result.get_response()["outputs"]}
    assert outputs["probabilities"]["parameters"]["binary_data_size"] == ROWS * 10 * 4
    assert "data" not in outputs["probabilities"]
    assert outputs["label"]["data"] == expected["2"]["labels"].tolist()
    assert "binary_data_size" not in outputs["label"].get("parameters", {})
    np.testing.assert_allclose(result.as_numpy("probabilities"),
                               expected["2"]["probabilities"], rtol=0, atol=1e-5)


def test_http_json_input_with_binary_outputs(http_client, digits_batch):
    """JSON input tensors, binary outputs (tritonclient's binary_data_output)."""
    x, expected = digits_batch
    result = http_client.infer("digits", [make_input(HTTP_JSON, "input", x)], model_version="1")
    for o in result.get_response()["outputs"]:
        assert "binary_data_size" in o["parameters"], o
    np.testing.assert_array_equal(result.as_numpy("label"), expected["1"]["labels"])


def test_http_raw_json_request(server, digits_batch):
    """A plain JSON request (no binary extension at all) gets a plain JSON answer."""
    x, expected = digits_batch
    body = json.dumps({
        "id": "raw-json",
        "inputs": [{"name": "input", "shape": [5, 64], "datatype": "FP32",
                    "data": x[:5].tolist()}],
    }).encode()
    status, headers, raw = http_call(server.base, "POST", "/v2/models/digits/versions/1/infer",
                                     body, {"Content-Type": "application/json"})
    assert status == 200, raw
    assert header(headers, "Inference-Header-Content-Length") is None
    assert header(headers, "Content-Type").startswith("application/json")
    resp = json_body(raw)
    assert resp["id"] == "raw-json" and resp["model_version"] == "1"
    outputs = {o["name"]: o for o in resp["outputs"]}
    assert outputs["label"]["datatype"] == "INT64" and outputs["label"]["shape"] == [5]
    assert outputs["label"]["data"] == expected["1"]["labels"][:5].tolist()
    assert outputs["probabilities"]["shape"] == [5, 10]
    np.testing.assert_allclose(np.asarray(outputs["probabilities"]["data"]).reshape(5, 10),
                               expected["1"]["probabilities"][:5], rtol=0, atol=1e-5)


def test_http_binary_data_output_parameter_with_override(server, digits_batch):
    """Request-level binary_data_output=true, overridden to JSON for one output."""
    x, expected = digits_batch
    body = json.dumps({
        "parameters": {"binary_data_output": True},
        "inputs": [{"name": "input", "shape": [4, 64], "datatype": "FP32",
                    "data": x[:4].ravel().tolist()}],
        "outputs": [{"name": "label", "parameters": {"binary_data": False}},
                    {"name": "probabilities"}],
    }).encode()
    status, headers, raw = http_call(server.base, "POST", "/v2/models/digits/versions/2/infer",
                                     body, {"Content-Type": "application/json"})
    assert status == 200, raw
    n = int(header(headers, "Inference-Header-Content-Length"))
    head = json.loads(raw[:n])
    outputs = {o["name"]: o for o in head["outputs"]}
    assert outputs["label"]["data"] == expected["2"]["labels"][:4].tolist()
    size = outputs["probabilities"]["parameters"]["binary_data_size"]
    assert size == 4 * 10 * 4 == len(raw) - n
    probabilities = np.frombuffer(raw[n:], dtype="<f4").reshape(4, 10)
    np.testing.assert_allclose(probabilities, expected["2"]["probabilities"][:4], rtol=0, atol=1e-5)


# ---------------------------------------------------------------- tiny


@pytest.mark.parametrize("mode", MODES)
def test_tiny_affine(request, mode):
    rng = np.random.default_rng(1234)
    x = rng.uniform(-1000, 1000, size=(7, 16)).astype(np.float32)
    x[0, :4] = [0.0, -0.0, 1e-30, -3.5]
    result = infer(request, mode, "tiny", {"input": x}, request_id=f"tiny-{mode}")
    out = result.as_numpy("output")
    assert out.dtype == np.float32 and out.shape == (7, 16)
    np.testing.assert_allclose(out, x * np.float32(2) + np.float32(1), rtol=1e-6, atol=1e-6)
    resp = response_of(result, mode)
    assert resp["model_version"] == "1" and resp["id"] == f"tiny-{mode}"


@pytest.mark.parametrize("mode", MODES)
def test_tiny_empty_batch(request, mode):
    x = np.zeros((0, 16), dtype=np.float32)
    result = infer(request, mode, "tiny", {"input": x})
    out = result.as_numpy("output")
    assert out.shape == (0, 16)


# ---------------------------------------------------------------- gRPC typed contents


def test_grpc_typed_contents(grpc_stub, digits_batch):
    """ModelInfer with typed contents (fp32_contents) instead of raw_input_contents:
    the answer comes back in typed contents too."""
    x, expected = digits_batch
    req = service_pb2.ModelInferRequest(model_name="digits", model_version="1", id="typed")
    tensor = req.inputs.add(name="input", datatype="FP32", shape=[3, 64])
    tensor.contents.fp32_contents.extend(x[:3].ravel().tolist())
    resp = grpc_stub.ModelInfer(req, timeout=30)
    assert resp.model_version == "1" and resp.id == "typed"
    assert len(resp.raw_output_contents) == 0
    outputs = {o.name: o for o in resp.outputs}
    assert list(outputs["label"].contents.int64_contents) == expected["1"]["labels"][:3].tolist()
    assert list(outputs["label"].shape) == [3]
    np.testing.assert_allclose(
        np.asarray(outputs["probabilities"].contents.fp32_contents).reshape(3, 10),
        expected["1"]["probabilities"][:3], rtol=0, atol=1e-5)


def test_grpc_typed_contents_wrong_field(grpc_stub):
    req = service_pb2.ModelInferRequest(model_name="tiny")
    tensor = req.inputs.add(name="input", datatype="FP32", shape=[1, 16])
    tensor.contents.fp64_contents.extend([1.0] * 16)
    with pytest.raises(Exception) as info:
        grpc_stub.ModelInfer(req, timeout=30)
    err = info.value
    assert str(err.code()) == "StatusCode.INVALID_ARGUMENT"
    assert "'input'" in err.details() and "fp64_contents" in err.details()


# ---------------------------------------------------------------- errors


def _good_request_still_works(request, mode, heldout, digits_expected):
    result = infer(request, mode, "digits", {"input": heldout["features"][:10]},
                   version="1", outputs=DIGITS_OUTPUTS)
    np.testing.assert_array_equal(result.as_numpy("label"), digits_expected["1"]["labels"][:10])


def _proto(mode):
    return "grpc" if mode == GRPC else "http"


@pytest.mark.parametrize("mode", MODES)
def test_error_unknown_model(request, mode, heldout, digits_expected):
    x = heldout["features"][:2]
    raises_server_error(
        lambda: infer(request, mode, "no_such_model", {"input": x}, outputs=DIGITS_OUTPUTS),
        _proto(mode), "not_found", "no_such_model")
    _good_request_still_works(request, mode, heldout, digits_expected)


@pytest.mark.parametrize("mode", MODES)
def test_error_unknown_version(request, mode, heldout, digits_expected):
    x = heldout["features"][:2]
    msg = raises_server_error(
        lambda: infer(request, mode, "digits", {"input": x}, version="7", outputs=DIGITS_OUTPUTS),
        _proto(mode), "not_found", "digits")
    assert "7" in msg
    _good_request_still_works(request, mode, heldout, digits_expected)


@pytest.mark.parametrize("mode", MODES)
def test_error_invalid_version(request, mode, heldout):
    x = heldout["features"][:2]
    raises_server_error(
        lambda: infer(request, mode, "digits", {"input": x}, version="abc", outputs=DIGITS_OUTPUTS),
        _proto(mode), "invalid", "abc")


@pytest.mark.parametrize("version", ["", "1"])
@pytest.mark.parametrize("mode", MODES)
def test_error_wrong_shape(request, mode, version, heldout, digits_expected):
    x = heldout["features"][:1, :63]
    raises_server_error(
        lambda: infer(request, mode, "digits", {"input": x}, version=version,
                      outputs=DIGITS_OUTPUTS),
        _proto(mode), "invalid", "'input'", "[-1, 64]", "[1, 63]")
    # Wrong rank too.
    x1 = heldout["features"][0]
    raises_server_error(
        lambda: infer(request, mode, "digits", {"input": x1}, version=version,
                      outputs=DIGITS_OUTPUTS),
        _proto(mode), "invalid", "'input'", "[-1, 64]", "[64]")
    _good_request_still_works(request, mode, heldout, digits_expected)


@pytest.mark.parametrize("mode", MODES)
def test_error_wrong_datatype(request, mode, heldout, digits_expected):
    x = heldout["features"][:2].astype(np.float64)
    raises_server_error(
        lambda: infer(request, mode, "digits", {"input": x}, outputs=DIGITS_OUTPUTS),
        _proto(mode), "invalid", "'input'", "FP32", "FP64")
    _good_request_still_works(request, mode, heldout, digits_expected)


@pytest.mark.parametrize("mode", MODES)
def test_error_unknown_input(request, mode, heldout, digits_expected):
    x = heldout["features"][:2]
    raises_server_error(
        lambda: infer(request, mode, "digits", {"pixels": x}, outputs=DIGITS_OUTPUTS),
        _proto(mode), "invalid", "'pixels'", "digits")
    _good_request_still_works(request, mode, heldout, digits_expected)


@pytest.mark.parametrize("mode", MODES)
def test_error_missing_input(request, mode, heldout, digits_expected):
    raises_server_error(
        lambda: infer(request, mode, "digits", {}, outputs=DIGITS_OUTPUTS),
        _proto(mode), "invalid", "'input'", "missing")
    _good_request_still_works(request, mode, heldout, digits_expected)


@pytest.mark.parametrize("mode", MODES)
def test_error_unknown_output(request, mode, heldout, digits_expected):
    x = heldout["features"][:2]
    raises_server_error(
        lambda: infer(request, mode, "digits", {"input": x}, outputs=["label", "logits"]),
        _proto(mode), "invalid", "'logits'", "probabilities")
    _good_request_still_works(request, mode, heldout, digits_expected)


def test_http_error_bodies_are_json(server):
    cases = [
        ("POST", "/v2/models/no_such_model/infer",
         {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0] * 64}]},
         404, "no_such_model"),
        ("POST", "/v2/models/digits/versions/7/infer",
         {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0] * 64}]},
         404, "7"),
        ("POST", "/v2/models/digits/infer",
         {"inputs": [{"name": "input", "shape": [1, 63], "datatype": "FP32", "data": [0] * 63}]},
         400, "[1, 63]"),
        ("POST", "/v2/models/digits/infer",
         {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0] * 63}]},
         400, "'input'"),
        ("GET", "/v2/models/no_such_model", None, 404, "no_such_model"),
        ("GET", "/v2/models/digits/versions/7/stats", None, 404, "7"),
    ]
    for method, path, payload, want_status, fragment in cases:
        body = None if payload is None else json.dumps(payload).encode()
        status, headers, raw = http_call(server.base, method, path, body,
                                         {"Content-Type": "application/json"})
        assert status == want_status, (path, status, raw)
        assert header(headers, "Content-Type").startswith("application/json"), path
        doc = json_body(raw)
        assert set(doc) == {"error"}, doc
        assert fragment in doc["error"], (path, doc)

    # Malformed JSON is a 400 with a JSON error body, too.
    status, headers, raw = http_call(server.base, "POST", "/v2/models/digits/infer",
                                     b"{not json", {"Content-Type": "application/json"})
    assert status == 400
    assert "error" in json_body(raw)


def test_grpc_error_details(grpc_client, heldout):
    """tritonclient.grpc passes the gRPC status code and details through."""
    x = heldout["features"][:1, :63]
    with pytest.raises(InferenceServerException) as info:
        grpc_client.infer("digits", [make_input(GRPC, "input", x)])
    expect_error(info.value, "grpc", "invalid", "'input'", "[-1, 64]", "[1, 63]")


# ---------------------------------------------------------------- statistics


def _stats(client, protocol, model, version=""):
    """{version: (inference_count, execution_count, success_count, fail_count)}."""
    s = client.get_inference_statistics(model, version)
    out = {}
    if protocol == "http":
        for m in s["model_stats"]:
            assert m["name"] == model
            st = m["inference_stats"]
            out[m["version"]] = (m["inference_count"], m["execution_count"],
                                 st["success"]["count"], st["fail"]["count"])
    else:
        for m in s.model_stats:
            assert m.name == model
            st = m.inference_stats
            out[m.version] = (m.inference_count, m.execution_count,
                              st.success.count, st.fail.count)
    return out


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_statistics_count_batch_rows(request, protocol):
    client = client_for(request, protocol)
    before = _stats(client, protocol, "tiny")
    assert set(before) == {"1"}

    rng = np.random.default_rng(7)
    batches = [5, 3, 1]
    for rows in batches:
        # Each protocol's inferences count: mix them.
        for mode in (HTTP_BINARY, GRPC):
            infer(request, mode, "tiny", {"input": rng.random((rows, 16), dtype=np.float32)})
    after = _stats(client, protocol, "tiny")["1"]
    b = before["1"]
    assert after[0] - b[0] == 2 * sum(batches), (before, after)  # inference_count: rows
    assert after[1] - b[1] == 2 * len(batches), (before, after)  # execution_count: requests
    assert after[2] - b[2] == 2 * len(batches), (before, after)  # success.count
    assert after[3] == b[3]

    # A request refused for its shape is a failure, and infers nothing.
    with pytest.raises(InferenceServerException):
        infer(request, HTTP_BINARY, "tiny", {"input": np.zeros((2, 15), dtype=np.float32)})
    failed = _stats(client, protocol, "tiny")["1"]
    assert failed[0] == after[0] and failed[1] == after[1] and failed[2] == after[2]
    assert failed[3] == after[3] + 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_statistics_per_version(request, protocol, heldout):
    client = client_for(request, protocol)
    before = _stats(client, protocol, "digits")
    assert set(before) == {"1", "2"}
    infer(request, HTTP_BINARY, "digits", {"input": heldout["features"][:11]})  # newest: v2
    infer(request, GRPC, "digits", {"input": heldout["features"][:4]}, version="1")
    after = _stats(client, protocol, "digits")
    assert after["2"][0] - before["2"][0] == 11
    assert after["1"][0] - before["1"][0] == 4

    only_v1 = _stats(client, protocol, "digits", "1")
    assert set(only_v1) == {"1"} and only_v1["1"][0] == after["1"][0]


def test_statistics_fields_http(http_client):
    stats = http_client.get_inference_statistics("tiny", "1")
    (m,) = stats["model_stats"]
    assert m["name"] == "tiny" and m["version"] == "1"
    for key in ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output"):
        assert set(m["inference_stats"][key]) == {"count", "ns"}, key
    assert isinstance(m["last_inference"], int)
    assert isinstance(m["batch_stats"], list)
    # infergate's extension rides along; Triton's client passes it through.
    d = m["distribution"]
    assert d["window_seconds"] == 60 and d["windows_kept"] == 10
    assert isinstance(d["windows"], list)


def test_statistics_extension_is_ignored_by_the_grpc_client(grpc_client):
    # Field 100 (distribution_json) is unknown to tritonclient's own
    # protobuf classes: parsing must still succeed and keep Triton's fields.
    stats = grpc_client.get_inference_statistics("tiny", "1", as_json=True)
    (m,) = stats["model_stats"]
    assert m["name"] == "tiny" and "distribution_json" not in m


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_statistics_unknown_model(request, protocol):
    client = client_for(request, protocol)
    raises_server_error(lambda: client.get_inference_statistics("no_such_model"),
                        protocol, "not_found", "no_such_model")
    raises_server_error(lambda: client.get_inference_statistics("digits", "7"),
                        protocol, "not_found", "7")


def test_statistics_all_models_grpc(grpc_client):
    names = {(m.name, m.version) for m in grpc_client.get_inference_statistics().model_stats}
    assert {("digits", "1"), ("digits", "2"), ("tiny", "1"), ("types", "1")} <= names


def test_statistics_all_models_http(http_client):
    stats = http_client.get_inference_statistics()
    names = {(m["name"], m["version"]) for m in stats["model_stats"]}
    assert {("digits", "1"), ("digits", "2"), ("tiny", "1"), ("types", "1")} <= names


# ---------------------------------------------------------------- client features


def _tiny_inputs(mod, x):
    inp = mod.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return [inp]


def test_http_async_infer_concurrent(server):
    """tritonclient.http async_infer over a pool of 4 connections: every
    answer belongs to its own request."""
    client = httpclient.InferenceServerClient(url=server.http_url, concurrency=4)
    try:
        rng = np.random.default_rng(99)
        xs = [rng.random((i % 5 + 1, 16), dtype=np.float32) for i in range(24)]
        pending = [client.async_infer("tiny", _tiny_inputs(httpclient, x), request_id=str(i))
                   for i, x in enumerate(xs)]
        for i, (x, p) in enumerate(zip(xs, pending)):
            result = p.get_result()
            assert result.get_response()["id"] == str(i)
            np.testing.assert_allclose(result.as_numpy("output"), x * 2 + 1, rtol=1e-6)
    finally:
        client.close()


def test_grpc_async_infer_concurrent(grpc_client):
    import queue

    done: queue.Queue = queue.Queue()
    rng = np.random.default_rng(98)
    xs = [rng.random((i % 5 + 1, 16), dtype=np.float32) for i in range(24)]
    for i, x in enumerate(xs):
        grpc_client.async_infer("tiny", _tiny_inputs(grpcclient, x),
                                callback=lambda result, error: done.put((result, error)),
                                request_id=str(i))
    seen = set()
    for _ in xs:
        result, error = done.get(timeout=30)
        assert error is None, error
        i = int(result.get_response().id)
        seen.add(i)
        np.testing.assert_allclose(result.as_numpy("output"), xs[i] * 2 + 1, rtol=1e-6)
    assert seen == set(range(len(xs)))


def test_asyncio_clients(server, digits_batch):
    """The asyncio flavours, tritonclient.http.aio and tritonclient.grpc.aio."""
    import asyncio

    import tritonclient.grpc.aio as grpcaio
    import tritonclient.http.aio as httpaio

    x, expected = digits_batch

    async def run():
        h = httpaio.InferenceServerClient(url=server.http_url)
        g = grpcaio.InferenceServerClient(url=server.grpc_url)
        try:
            assert await h.is_server_ready() and await g.is_server_ready()
            assert (await h.get_model_metadata("digits"))["versions"] == ["1", "2"]
            hi = httpaio.InferInput("input", list(x.shape), "FP32")
            hi.set_data_from_numpy(x)
            gi = grpcaio.InferInput("input", list(x.shape), "FP32")
            gi.set_data_from_numpy(x)
            return (await h.infer("digits", [hi], model_version="1"),
                    await g.infer("digits", [gi], model_version="2"))
        finally:
            await h.close()
            await g.close()

    via_http, via_grpc = asyncio.run(run())
    np.testing.assert_array_equal(via_http.as_numpy("label"), expected["1"]["labels"])
    np.testing.assert_array_equal(via_grpc.as_numpy("label"), expected["2"]["labels"])


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_http_response_compression_request(http_client, algorithm):
    """Asking for a compressed answer works (compressing it is optional)."""
    x = np.ones((2, 16), dtype=np.float32)
    result = http_client.infer("tiny", _tiny_inputs(httpclient, x),
                               response_compression_algorithm=algorithm)
    np.testing.assert_array_equal(result.as_numpy("output"), np.full((2, 16), 3, np.float32))


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_http_request_compression(http_client, algorithm):
    x = np.ones((2, 16), dtype=np.float32)
    result = http_client.infer("tiny", _tiny_inputs(httpclient, x),
                               request_compression_algorithm=algorithm)
    np.testing.assert_array_equal(result.as_numpy("output"), np.full((2, 16), 3, np.float32))


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_grpc_compression(grpc_client, algorithm):
    x = np.ones((2, 16), dtype=np.float32)
    result = grpc_client.infer("tiny", _tiny_inputs(grpcclient, x), compression_algorithm=algorithm)
    np.testing.assert_array_equal(result.as_numpy("output"), np.full((2, 16), 3, np.float32))
