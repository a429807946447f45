"""The model repository extension through tritonclient: index, load, unload.

Unloading works on `tiny`; every test that unloads it loads it again before
it ends (also when it fails), so the other modules find it served.
"""

from __future__ import annotations

import numpy as np
import pytest

from _support import (
    GRPC,
    HTTP_BINARY,
    PROTOCOLS,
    client_for,
    http_call,
    infer,
    json_body,
    raises_server_error,
)


def _index(client, protocol):
    """{(name, version): (state, reason)}."""
    if protocol == "http":
        rows = client.get_model_repository_index()
        assert isinstance(rows, list)
        return {(r["name"], r["version"]): (r["state"], r.get("reason", "")) for r in rows}
    rows = client.get_model_repository_index().models
    return {(r.name, r.version): (r.state, r.reason) for r in rows}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_index_lists_every_version_ready(request, protocol):
    index = _index(client_for(request, protocol), protocol)
    for key in [("digits", "1"), ("digits", "2"), ("tiny", "1"), ("types", "1")]:
        assert key in index, (key, index)
        assert index[key][0] == "READY", (key, index[key])
    # digits/data is not a version folder.
    assert {v for (m, v) in index if m == "digits"} == {"1", "2"}


def test_index_ready_filter_http(server):
    status, _, body = http_call(server.base, "POST", "/v2/repository/index", b'{"ready": true}',
                                {"Content-Type": "application/json"})
    assert status == 200
    rows = json_body(body)
    assert {(r["name"], r["version"]) for r in rows} >= {("digits", "1"), ("tiny", "1")}
    assert all(r["state"] == "READY" for r in rows)


def _tiny_works(request, mode):
    x = np.arange(32, dtype=np.float32).reshape(2, 16)
    out = infer(request, mode, "tiny", {"input": x}).as_numpy("output")
    np.testing.assert_array_equal(out, x * 2 + 1)


@pytest.fixture
def restore_tiny(http_client):
    """Loads tiny again whatever the test did to it."""
    yield
    http_client.load_model("tiny")
    assert http_client.is_model_ready("tiny")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_unload_then_load(request, protocol, restore_tiny, server, http_client, grpc_client):
    client = client_for(request, protocol)
    _tiny_works(request, HTTP_BINARY)

    client.unload_model("tiny")

    # Not ready, over both protocols, with and without a version.
    assert http_client.is_model_ready("tiny") is False
    assert http_client.is_model_ready("tiny", "1") is False
    assert grpc_client.is_model_ready("tiny") is False
    assert grpc_client.is_model_ready("tiny", "1") is False
    status, _, _ = http_call(server.base, "GET", "/v2/models/tiny/ready")
    assert status == 503

    # Still listed, as unavailable.
    for proto in PROTOCOLS:
        index = _index(client_for(request, proto), proto)
        state, reason = index[("tiny", "1")]
        assert state == "UNAVAILABLE", index
        assert reason, "an unavailable version should say why"
        assert index[("digits", "2")][0] == "READY"

    # Inference is refused as unavailable (the model exists but does not serve).
    x = np.zeros((1, 16), dtype=np.float32)
    for mode, proto in [(HTTP_BINARY, "http"), (GRPC, "grpc")]:
        raises_server_error(lambda: infer(request, mode, "tiny", {"input": x}),
                            proto, "unavailable", "tiny")
        raises_server_error(lambda: infer(request, mode, "tiny", {"input": x}, version="1"),
                            proto, "unavailable", "tiny")

    # Other models are unaffected.
    assert http_client.is_model_ready("digits") is True
    out = infer(request, GRPC, "digits", {"input": np.zeros((1, 64), dtype=np.float32)})
    assert out.as_numpy("label").shape == (1,)

    client.load_model("tiny")

    assert http_client.is_model_ready("tiny") is True
    assert grpc_client.is_model_ready("tiny", "1") is True
    assert _index(client, protocol)[("tiny", "1")][0] == "READY"
    _tiny_works(request, HTTP_BINARY)
    _tiny_works(request, GRPC)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_load_of_loaded_model_keeps_it_serving(request, protocol):
    client = client_for(request, protocol)
    client.load_model("tiny")
    assert client.is_model_ready("tiny") is True
    _tiny_works(request, HTTP_BINARY)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_load_and_unload_unknown_model(request, protocol):
    client = client_for(request, protocol)
    raises_server_error(lambda: client.load_model("no_such_model"),
                        protocol, "not_found", "no_such_model")
    raises_server_error(lambda: client.unload_model("no_such_model"),
                        protocol, "not_found", "no_such_model")

