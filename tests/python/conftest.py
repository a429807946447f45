"""Fixtures for the tritonclient compatibility suite.

One infergate process serves the whole session, on free ports, from a
temporary copy of the model repository (``models/`` plus the test-only
``tests/models/types`` and ``types_typed``), so tests can load and unload models without touching
the real repository.

Environment:
    INFERGATE_BIN          server binary (default: target/debug/infergate)
    ORT_DYLIB_PATH         ONNX Runtime library (default: .ort/libonnxruntime.so.1.31.1)
    INFERGATE_READY_TIMEOUT  seconds to wait for /v2/health/ready (default 30)
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
ORT_DEFAULT = REPO_ROOT / ".ort" / "libonnxruntime.so.1.31.1"

# The binary may be rebuilt (and briefly absent) while another build runs.
BINARY_WAIT_S = 180
READY_TIMEOUT_S = float(os.environ.get("INFERGATE_READY_TIMEOUT", "30"))
STOP_TIMEOUT_S = 10


@dataclass
class Server:
    http_port: int
    grpc_port: int
    metrics_port: int
    repository: Path
    log_path: Path
    process: subprocess.Popen

    @property
    def http_url(self) -> str:
        """host:port, the form tritonclient.http expects."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def _binary() -> Path:
    env = os.environ.get("INFERGATE_BIN")
    path = Path(env) if env else REPO_ROOT / "target" / "debug" / "infergate"
    if not path.is_absolute():
        path = REPO_ROOT / path
    deadline = time.monotonic() + BINARY_WAIT_S
    while not (path.is_file() and os.access(path, os.X_OK)):
        if time.monotonic() > deadline:
            pytest.fail(
                f"infergate binary not found at {path}; build it (cargo build) "
                "or set INFERGATE_BIN"
            )
        time.sleep(2)
    return path


def _free_ports(n: int) -> list[int]:
    """n distinct free ports: bind them all at once, then release them."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _http_status(url: str, timeout: float = 2.0) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None


def _stop(process: subprocess.Popen) -> str | None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT_S. Returns what went wrong, if anything."""
    if process.poll() is not None:
        return f"the server had already exited with status {process.returncode}"
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return f"the server ignored SIGTERM for {STOP_TIMEOUT_S}s and was killed"
    if process.returncode != 0:
        return f"the server exited with status {process.returncode} on SIGTERM"
    return None


def _start(binary: Path, repository: Path, log_path: Path) -> Server:
    env = dict(os.environ)
    env.setdefault("ORT_DYLIB_PATH", str(ORT_DEFAULT))
    # Keep the port choice ours: ignore any INFERGATE_* settings of the caller.
    for key in [k for k in env if k.startswith("INFERGATE_") and k != "INFERGATE_BIN"]:
        del env[key]
    http_port, grpc_port, metrics_port = _free_ports(3)
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [
            str(binary), "serve",
            "--model-repository", str(repository),
            "--host", "127.0.0.1",
            "--http-port", str(http_port),
            "--grpc-port", str(grpc_port),
            "--metrics-port", str(metrics_port),
            "--poll-interval", "0s",
        ],
        cwd=str(REPO_ROOT),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return Server(http_port, grpc_port, metrics_port, repository, log_path, process)


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    binary = _binary()
    root = tmp_path_factory.mktemp("infergate")
    repository = root / "repository"
    shutil.copytree(REPO_ROOT / "models", repository)
    for name in ("types", "types_typed"):
        shutil.copytree(REPO_ROOT / "tests" / "models" / name, repository / name)
    # The digits gate times one-row runs at every load; on a shared 2-core
    # machine its shipped 50 ms budget can be missed by a slow moment, so the
    # tests' copy gets one only a broken model misses (as tests/common does).
    digits_config = repository / "digits" / "config.toml"
    text = digits_config.read_text()
    assert "max_p99_ms = 50.0" in text, text
    digits_config.write_text(text.replace("max_p99_ms = 50.0", "max_p99_ms = 5000.0"))

    # A port picked free may be taken before the server binds it; retry then.
    for attempt in range(3):
        log_path = root / f"server-{attempt}.log"
        srv = _start(binary, repository, log_path)
        deadline = time.monotonic() + READY_TIMEOUT_S
        ready = False
        while time.monotonic() < deadline:
            if srv.process.poll() is not None:
                break
            if _http_status(f"{srv.base}/v2/health/ready") == 200:
                ready = True
                break
            time.sleep(0.1)
        if ready:
            break
        _stop(srv.process)
        log = srv.log()
        if srv.process.returncode is not None and "in use" in log and attempt < 2:
            continue
        if srv.process.returncode is not None:
            pytest.fail(
                f"infergate exited early (status {srv.process.returncode}) "
                f"before becoming ready; output:\n{log}"
            )
        pytest.fail(f"infergate not ready after {READY_TIMEOUT_S:.0f}s; output:\n{log}")

    yield srv

    problem = _stop(srv.process)
    if problem:
        pytest.fail(f"{problem}; output:\n{srv.log()[-5000:]}")


def _close(client) -> None:
    try:
        client.close()
    except Exception:  # noqa: BLE001 - closing is best effort
        pass


@pytest.fixture(scope="session")
def http_client(server):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(url=server.http_url, network_timeout=60.0)
    yield client
    _close(client)


@pytest.fixture(scope="session")
def grpc_client(server):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url=server.grpc_url)
    yield client
    _close(client)


@pytest.fixture(scope="session")
def grpc_stub(server):
    """The bare GRPCInferenceService stub (tritonclient's generated code), for
    requests tritonclient cannot build, such as typed contents."""
    import grpc
    from tritonclient.grpc import service_pb2_grpc

    channel = grpc.insecure_channel(server.grpc_url)
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


@pytest.fixture(scope="session")
def heldout():
    with open(REPO_ROOT / "models" / "digits" / "data" / "heldout.json") as f:
        data = json.load(f)
    return {
        "features": np.asarray(data["features"], dtype=np.float32),
        "labels": np.asarray(data["labels"], dtype=np.int64),
    }


@pytest.fixture(scope="session")
def digits_expected():
    with open(REPO_ROOT / "tests" / "fixtures" / "digits_expected.json") as f:
        data = json.load(f)
    out = {"disagreement_rows": data["disagreement_rows"]}
    for v in ("1", "2"):
        out[v] = {
            "probabilities": np.asarray(data[v]["probabilities"], dtype=np.float64),
            "labels": np.asarray(data[v]["labels"], dtype=np.int64),
        }
    return out
