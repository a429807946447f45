"""Every V2 datatype through the `types` identity model, over HTTP binary,
HTTP JSON, HTTP with binary and JSON tensors mixed, and gRPC.

The model has one input in_<t> and one output out_<t> (shape [-1, -1]) per
datatype, and needs all 13 inputs in every request.
"""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException

from _support import (
    GRPC,
    HTTP_BINARY,
    HTTP_JSON,
    client_for,
    make_input,
    make_output,
    raises_server_error,
)

HTTP_MIXED = "http-mixed"

TYPES = {
    "bool": np.bool_,
    "uint8": np.uint8,
    "uint16": np.uint16,
    "uint32": np.uint32,
    "uint64": np.uint64,
    "int8": np.int8,
    "int16": np.int16,
    "int32": np.int32,
    "int64": np.int64,
    "fp16": np.float16,
    "fp32": np.float32,
    "fp64": np.float64,
    "bytes": np.object_,
}

# Eight values each (shape [2, 4]), extremes included. Integers near 2**53
# and 2**64 catch a decoder that goes through float64.
FINITE = {
    "bool": [True, False, False, True, True, True, False, False],
    "uint8": [0, 1, 127, 128, 254, 255, 42, 7],
    "uint16": [0, 1, 255, 256, 32767, 32768, 65534, 65535],
    "uint32": [0, 1, 65535, 65536, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1],
    "uint64": [0, 1, 2**32 - 1, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1],
    "int8": [-128, -127, -1, 0, 1, 126, 127, -2],
    "int16": [-32768, -32767, -1, 0, 1, 32766, 32767, 12345],
    "int32": [-2**31, -2**31 + 1, -1, 0, 1, 2**31 - 2, 2**31 - 1, 123456789],
    "int64": [-2**63, -2**63 + 1, -(2**53) - 1, -1, 0, 2**53 + 1, 2**63 - 2, 2**63 - 1],
    # max, min, smallest subnormal, smallest normal, -0.0, a rounded 1/3
    "fp16": [0.0, -0.0, 65504.0, -65504.0, 2.0**-24, 2.0**-14, 1 / 3, -2.5],
    "fp32": [0.0, -0.0, 3.4028234663852886e38, -3.4028234663852886e38, 1.401298464324817e-45,
             1.1754943508222875e-38, 0.1, 16777217.0],
    "fp64": [0.0, -0.0, 1.7976931348623157e308, -1.7976931348623157e308, 5e-324,
             2.2250738585072014e-308, 0.1, 1 / 3],
    "bytes": [b"", b"plain ascii", "h\u00e9llo w\u00f6rld".encode(), "\u65e5\u672c\u8a9e".encode(),
              "\U0001f680 emoji \U0001f44d\U0001f3fd".encode(), b"  spaces\tand\nnewlines  ",
              ("x" * 1000).encode(), b'{"json": "inside", "quote": "\\""}'],
}
# Values JSON cannot carry: only sent in binary and gRPC.
NON_FINITE = [float("inf"), float("-inf"), float("nan"), -1.0]


def _arrays(with_non_finite: bool) -> dict[str, np.ndarray]:
    out = {}
    for suffix, dtype in TYPES.items():
        values = FINITE[suffix]
        if dtype is np.object_:
            a = np.array(values, dtype=np.object_).reshape(2, 4)
        else:
            a = np.array(values, dtype=dtype).reshape(2, 4)
            if with_non_finite and suffix.startswith("fp"):
                a = np.vstack([a, np.array(NON_FINITE, dtype=dtype)])  # shape [3, 4]
        out[suffix] = a
    return out


def _same(suffix: str, got: np.ndarray, want: np.ndarray):
    assert got is not None, f"out_{suffix} missing"
    assert got.shape == want.shape, (suffix, got.shape, want.shape)
    if suffix == "bytes":
        norm = [g.encode() if isinstance(g, str) else bytes(g) for g in got.ravel()]
        assert norm == list(want.ravel()), suffix
        return
    assert got.dtype == want.dtype, (suffix, got.dtype, want.dtype)
    if suffix.startswith("fp"):
        # Bit for bit: -0.0, subnormals and NaN included.
        view = {2: np.uint16, 4: np.uint32, 8: np.uint64}[want.dtype.itemsize]
        np.testing.assert_array_equal(got.view(view), want.view(view), err_msg=suffix)
    else:
        np.testing.assert_array_equal(got, want, err_msg=suffix)


def _send(request, mode: str, arrays: dict[str, np.ndarray], skip: str | None = None):
    client = client_for(request, mode)
    inputs, outputs = [], []
    for i, (suffix, a) in enumerate(arrays.items()):
        if suffix == skip:
            continue
        if mode == HTTP_MIXED:
            binary = i % 2 == 0
            inputs.append(make_input(HTTP_BINARY, f"in_{suffix}", a, binary=binary))
            outputs.append(make_output(HTTP_BINARY, f"out_{suffix}", binary=not binary))
        else:
            inputs.append(make_input(mode, f"in_{suffix}", a))
            outputs.append(make_output(mode, f"out_{suffix}"))
    # Binary and gRPC: let the server return every output by default.
    named = outputs if mode in (HTTP_JSON, HTTP_MIXED) else None
    return client.infer("types", inputs, outputs=named, request_id=f"types-{mode}")


@pytest.mark.parametrize("mode", [HTTP_BINARY, GRPC, HTTP_JSON, HTTP_MIXED])
def test_every_datatype_round_trips(request, mode):
    arrays = _arrays(with_non_finite=mode in (HTTP_BINARY, GRPC))
    result = _send(request, mode, arrays)
    for suffix, want in arrays.items():
        _same(suffix, result.as_numpy(f"out_{suffix}"), want)


@pytest.mark.parametrize("mode", [HTTP_BINARY, GRPC, HTTP_JSON])
def test_every_datatype_empty_tensor(request, mode):
    arrays = {s: np.zeros((0, 3), dtype=d) for s, d in TYPES.items()}
    result = _send(request, mode, arrays)
    for suffix, want in arrays.items():
        got = result.as_numpy(f"out_{suffix}")
        assert got is not None and got.shape == (0, 3), suffix


@pytest.mark.parametrize("mode", [HTTP_BINARY, GRPC])
def test_shapes_are_independent_per_input(request, mode):
    """[-1, -1] lets every input have its own shape."""
    arrays = _arrays(with_non_finite=False)
    arrays["uint8"] = np.arange(15, dtype=np.uint8).reshape(5, 3)
    arrays["bytes"] = np.array([[b"only one"]], dtype=np.object_)
    result = _send(request, mode, arrays)
    for suffix, want in arrays.items():
        _same(suffix, result.as_numpy(f"out_{suffix}"), want)


@pytest.mark.parametrize("mode", [HTTP_BINARY, GRPC])
def test_missing_input_is_named(request, mode):
    proto = "grpc" if mode == GRPC else "http"
    raises_server_error(lambda: _send(request, mode, _arrays(False), skip="fp16"),
                        proto, "invalid", "'in_fp16'", "types")


# The typed contents field the V2 spec gives each datatype (FP16 has none).
TYPED_FIELD = {
    "bool": "bool_contents",
    "uint8": "uint_contents",
    "uint16": "uint_contents",
    "uint32": "uint_contents",
    "uint64": "uint64_contents",
    "int8": "int_contents",
    "int16": "int_contents",
    "int32": "int_contents",
    "int64": "int64_contents",
    "fp32": "fp32_contents",
    "fp64": "fp64_contents",
    "bytes": "bytes_contents",
}


def _typed_request(model: str, arrays: dict[str, np.ndarray]) -> service_pb2.ModelInferRequest:
    req = service_pb2.ModelInferRequest(model_name=model)
    for suffix, a in arrays.items():
        t = req.inputs.add(name=f"in_{suffix}", datatype=suffix.upper(), shape=list(a.shape))
        # FP16 has no field of its own: put it in fp32_contents, the wrong one.
        field = TYPED_FIELD.get(suffix, "fp32_contents")
        getattr(t.contents, field).extend(a.ravel().tolist())
    return req


def test_grpc_typed_contents_every_field_in_and_out(grpc_stub):
    """Every typed datatype sent in its own contents field (numpy values)
    comes back in the same field, the others empty; nothing raw."""
    arrays = {s: a for s, a in _arrays(False).items() if s != "fp16"}
    resp = grpc_stub.ModelInfer(_typed_request("types_typed", arrays), timeout=30)
    assert len(resp.raw_output_contents) == 0
    outs = {o.name: o for o in resp.outputs}
    assert sorted(outs) == sorted(f"out_{s}" for s in arrays)
    for suffix, a in arrays.items():
        out = outs[f"out_{suffix}"]
        assert out.datatype == suffix.upper() and list(out.shape) == list(a.shape), suffix
        field = TYPED_FIELD[suffix]
        for other in set(TYPED_FIELD.values()) - {field}:
            assert len(getattr(out.contents, other)) == 0, (suffix, other)
        got = list(getattr(out.contents, field))
        want = a.ravel().tolist()
        if suffix == "fp32":
            # fp32_contents are float32 on the wire: compare bit patterns.
            np.testing.assert_array_equal(np.array(got, np.float32).view(np.uint32),
                                          a.ravel().view(np.uint32), err_msg=suffix)
        else:
            assert got == want, suffix


def test_grpc_fp16_typed_contents_refused(grpc_stub):
    """FP16 has no typed contents field: the spec wants raw_input_contents.
    Every other input is valid, so the refusal can only be about FP16."""
    import grpc

    arrays = _arrays(False)
    # The same request without FP16, to the model without it, is served.
    ok = {s: a for s, a in arrays.items() if s != "fp16"}
    assert len(grpc_stub.ModelInfer(_typed_request("types_typed", ok), timeout=30).outputs) == 12
    with pytest.raises(grpc.RpcError) as info:
        grpc_stub.ModelInfer(_typed_request("types", arrays), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    message = info.value.details()
    assert "'in_fp16'" in message and "FP16" in message and "raw_input_contents" in message, message


# ------------------------------------------------------------ BYTES that ONNX cannot hold



@pytest.mark.parametrize("mode", [HTTP_BINARY, GRPC])
@pytest.mark.parametrize("value", [b"\xff\xfe", b"a\x00b"], ids=["not-utf8", "nul"])
def test_unrepresentable_bytes_are_a_client_error(request, mode, value):
    arrays = _arrays(False)
    arrays["bytes"] = np.array([[b"fine", value]], dtype=np.object_)
    proto = "grpc" if mode == GRPC else "http"
    raises_server_error(lambda: _send(request, mode, arrays), proto, "invalid", "'in_bytes'")


@pytest.mark.parametrize("mode", [HTTP_BINARY, GRPC])
@pytest.mark.parametrize("value", [b"\xff\xfe", b"a\x00b"], ids=["not-utf8", "nul"])
def test_unrepresentable_bytes_are_refused_and_server_survives(request, mode, value):
    """Whatever the status, such a request fails, names the input, and does
    not disturb the next one."""
    arrays = _arrays(False)
    arrays["bytes"] = np.array([[b"fine", value]], dtype=np.object_)
    with pytest.raises(InferenceServerException) as info:
        _send(request, mode, arrays)
    assert "in_bytes" in info.value.message()
    result = _send(request, mode, _arrays(False))
    _same("bytes", result.as_numpy("out_bytes"), _arrays(False)["bytes"])
