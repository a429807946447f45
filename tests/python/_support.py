"""Helpers shared by the test modules (plain functions, no fixtures)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

# How a request travels: tritonclient.http with JSON tensors, tritonclient.http
# with the binary tensor extension (its default), tritonclient.grpc (which
# always sends raw_input_contents).
HTTP_JSON = "http-json"
HTTP_BINARY = "http-binary"
GRPC = "grpc"
MODES = [HTTP_JSON, HTTP_BINARY, GRPC]
PROTOCOLS = ["http", "grpc"]

# What each protocol answers for each class of error.
HTTP_STATUS = {"not_found": "404", "invalid": "400", "unavailable": "503", "internal": "500"}
GRPC_STATUS = {
    "not_found": "StatusCode.NOT_FOUND",
    "invalid": "StatusCode.INVALID_ARGUMENT",
    "unavailable": "StatusCode.UNAVAILABLE",
    "internal": "StatusCode.INTERNAL",
}


def protocol_of(mode: str) -> str:
    return "grpc" if mode == GRPC else "http"


def module_of(mode: str):
    return grpcclient if protocol_of(mode) == "grpc" else httpclient


def client_for(request, mode: str):
    """The session client (fixture) for a mode or protocol name."""
    return request.getfixturevalue(
        "grpc_client" if protocol_of(mode) == "grpc" else "http_client"
    )


def make_input(mode: str, name: str, array: np.ndarray, binary: bool | None = None):
    mod = module_of(mode)
    inp = mod.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
    if mod is grpcclient:
        inp.set_data_from_numpy(array)
    else:
        inp.set_data_from_numpy(array, binary_data=(mode != HTTP_JSON) if binary is None else binary)
    return inp


def make_output(mode: str, name: str, binary: bool | None = None):
    mod = module_of(mode)
    if mod is grpcclient:
        return mod.InferRequestedOutput(name)
    return mod.InferRequestedOutput(
        name, binary_data=(mode != HTTP_JSON) if binary is None else binary
    )


def infer(request, mode: str, model: str, inputs: dict, version: str = "",
          outputs: list[str] | None = None, request_id: str = ""):
    """Runs one inference with tritonclient; inputs maps name -> numpy array.

    In JSON mode the outputs are always named (with binary_data=False), since
    tritonclient asks for binary outputs whenever no output is named.
    """
    client = client_for(request, mode)
    if outputs is None and mode == HTTP_JSON:
        outputs = [o["name"] for o in client.get_model_metadata(model, version)["outputs"]]
    return client.infer(
        model,
        [make_input(mode, n, a) for n, a in inputs.items()],
        model_version=version,
        outputs=None if outputs is None else [make_output(mode, o) for o in outputs],
        request_id=request_id,
    )


def response_of(result, mode: str) -> dict:
    """model_name / model_version / id / output names of a result, either protocol."""
    r = result.get_response()
    if protocol_of(mode) == "grpc":
        return {
            "model_name": r.model_name,
            "model_version": r.model_version,
            "id": r.id,
            "outputs": [o.name for o in r.outputs],
        }
    return {
        "model_name": r.get("model_name"),
        "model_version": r.get("model_version"),
        "id": r.get("id", ""),
        "outputs": [o["name"] for o in r.get("outputs", [])],
    }


def expect_error(excinfo_value: InferenceServerException, protocol: str, kind: str,
                 *fragments: str) -> str:
    """Checks an InferenceServerException's status and that its message
    names every fragment; returns the message."""
    e = excinfo_value
    want = (GRPC_STATUS if protocol == "grpc" else HTTP_STATUS)[kind]
    msg = e.message() or ""
    assert e.status() == want, f"status {e.status()!r}, expected {want!r}; message: {msg!r}"
    # tritonclient.http substitutes this text when the error body is not JSON.
    assert "exception occurred in the client" not in msg, msg
    for fragment in fragments:
        assert fragment in msg, f"{fragment!r} not in error message {msg!r}"
    return msg


def raises_server_error(fn, protocol: str, kind: str, *fragments: str) -> str:
    with pytest.raises(InferenceServerException) as info:
        fn()
    return expect_error(info.value, protocol, kind, *fragments)


def http_call(base: str, method: str, path: str, body: bytes | None = None,
              headers: dict | None = None):
    """A raw HTTP request: (status, headers, body bytes). Never raises on 4xx/5xx."""
    req = urllib.request.Request(base + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, dict(r.headers.items()), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers.items()), e.read()


def header(headers: dict, name: str):
    for k, v in headers.items():
        if k.lower() == name.lower():
            return v
    return None


def json_body(body: bytes):
    return json.loads(body.decode("utf-8"))


def wait_for(what: str, predicate, timeout: float = 30, every: float = 0.2):
    """Calls `predicate` until it returns something true, and returns that;
    an exception counts as "not yet" (a page re-rendering, a server still
    starting). After `timeout` seconds the test fails, naming `what` and the
    last answer."""
    import time

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - not there yet
            last = e
        time.sleep(every)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}: {last!r}")


def start_server(repository, log_path, *flags: str, ready_timeout: float = 60):
    """An infergate process of its own on free loopback ports, serving
    `repository` with `flags` added, once it is ready: (process, base URL,
    metrics port). The caller stops it (conftest._stop)."""
    import os
    import subprocess

    from conftest import ORT_DEFAULT, _binary, _free_ports, _http_status

    http, grpc, metrics = _free_ports(3)
    env = dict(os.environ, ORT_DYLIB_PATH=str(ORT_DEFAULT))
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(_binary()), "serve", "--model-repository", str(repository), "--host", "127.0.0.1",
             "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
             "--poll-interval", "0s", *flags],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{http}"

    def ready():
        assert process.poll() is None, f"infergate exited early:\n{open(log_path).read()[-3000:]}"
        return _http_status(base + "/v2/health/ready") == 200

    wait_for("infergate to be ready", ready, ready_timeout, 0.1)
    return process, base, metrics
