"""TLS on both ports with Triton's own clients: tritonclient.http
(ssl=True) and tritonclient.grpc (ssl=True, root certificates) infer over
TLS against a CA made in the test (trustme); under mutual TLS a client
without a certificate is refused; plaintext to a TLS port fails cleanly
while the server keeps serving; a replaced certificate is served without
a restart."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import trustme
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from conftest import ORT_DEFAULT, REPO_ROOT, _binary, _free_ports, _stop


def _ready(port: int, ca: trustme.CA, client_cert=None, deadline_s: float = 30) -> bool:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    if client_cert is not None:
        client_cert.configure_cert(ctx)
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            c = httpclient.InferenceServerClient(f"127.0.0.1:{port}", ssl=True,
                                                 ssl_context_factory=lambda: ctx)
            if c.is_server_ready():
                return True
        except Exception:
            pass
        time.sleep(0.2)
    return False


@pytest.fixture()
def pki(tmp_path):
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("client@infergate.test")
    paths = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "cert.pem", "key": tmp_path / "key.pem"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.private_key_pem.write_to_path(str(paths["key"]))
    with open(paths["cert"], "wb") as f:
        for blob in server.cert_chain_pems:
            f.write(blob.bytes())
    return ca, client, paths


def _serve(tmp_path, extra):
    repo = tmp_path / "models"
    if not repo.exists():
        shutil.copytree(REPO_ROOT / "models" / "tiny", repo / "tiny")
    http, grpc, metrics = _free_ports(3)
    log = open(tmp_path / f"server-{http}.log", "wb")
    proc = subprocess.Popen(
        [str(_binary()), "serve", "--model-repository", str(repo), "--host", "127.0.0.1",
         "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
         "--poll-interval", "0s", *extra],
        env=dict(os.environ, ORT_DYLIB_PATH=str(ORT_DEFAULT)), stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL)
    log.close()
    proc.metrics_port = metrics
    return proc, http, grpc, tmp_path / f"server-{http}.log"


def _infer_http(client):
    x = np.arange(16, dtype=np.float32).reshape(1, 16)
    i = httpclient.InferInput("input", [1, 16], "FP32")
    i.set_data_from_numpy(x, binary_data=True)
    out = client.infer("tiny", [i]).as_numpy("output")
    np.testing.assert_allclose(out, x * 2 + 1)


def _infer_grpc(client):
    x = np.arange(16, dtype=np.float32).reshape(1, 16)
    i = grpcclient.InferInput("input", [1, 16], "FP32")
    i.set_data_from_numpy(x)
    out = client.infer("tiny", [i]).as_numpy("output")
    np.testing.assert_allclose(out, x * 2 + 1)


def _plaintext_gets_nothing(port: int, path: str) -> None:
    """A plaintext request to a TLS port: refused or unanswered, never served."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        s.settimeout(5)
        try:
            answer = s.recv(1024)
        except (ConnectionResetError, socket.timeout):
            answer = b""
        assert b"200 OK" not in answer and b"infergate_" not in answer, answer


def test_tritonclient_infers_over_tls_and_plaintext_fails_cleanly(pki, tmp_path):
    ca, _, paths = pki
    proc, http, grpc, log = _serve(tmp_path, ["--tls-cert", str(paths["cert"]), "--tls-key", str(paths["key"])])
    try:
        assert _ready(http, ca), log.read_text()
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        h = httpclient.InferenceServerClient(f"127.0.0.1:{http}", ssl=True, ssl_context_factory=lambda: ctx)
        _infer_http(h)
        g = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}", ssl=True,
                                             root_certificates=str(paths["ca"]))
        _infer_grpc(g)
        # Plaintext to the TLS ports: refused, not hung, nothing served.
        for port in (http, grpc):
            _plaintext_gets_nothing(port, "/v2/health/ready")
        plain = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}")
        with pytest.raises(InferenceServerException):
            plain.is_server_live(client_timeout=5)
        # Still serving over TLS.
        _infer_http(h)
        _infer_grpc(g)
    finally:
        problem = _stop(proc)
    assert problem is None, problem


def test_mutual_tls_refuses_a_client_without_a_certificate(pki, tmp_path):
    ca, client, paths = pki
    proc, http, grpc, log = _serve(tmp_path, ["--tls-cert", str(paths["cert"]), "--tls-key", str(paths["key"]),
                                              "--tls-client-ca", str(paths["ca"])])
    try:
        assert _ready(http, ca, client), log.read_text()
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        anonymous = httpclient.InferenceServerClient(f"127.0.0.1:{http}", ssl=True,
                                                     ssl_context_factory=lambda: ctx)
        with pytest.raises(Exception):
            anonymous.is_server_live()
        g_anonymous = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc}", ssl=True,
                                                       root_certificates=str(paths["ca"]))
        with pytest.raises(InferenceServerException):
            g_anonymous.is_server_live(client_timeout=5)
        # With the certificate the CA signed: served.
        client.private_key_pem.write_to_path(str(tmp_path / "client-key.pem"))
        with open(tmp_path / "client-cert.pem", "wb") as f:
            for blob in client.cert_chain_pems:
                f.write(blob.bytes())
        cctx = ssl.create_default_context()
        ca.configure_trust(cctx)
        client.configure_cert(cctx)
        _infer_http(httpclient.InferenceServerClient(f"127.0.0.1:{http}", ssl=True,
                                                     ssl_context_factory=lambda: cctx))
        _infer_grpc(grpcclient.InferenceServerClient(
            f"127.0.0.1:{grpc}", ssl=True, root_certificates=str(paths["ca"]),
            private_key=str(tmp_path / "client-key.pem"), certificate_chain=str(tmp_path / "client-cert.pem")))
    finally:
        problem = _stop(proc)
    assert problem is None, problem


def test_a_replaced_certificate_is_served_without_a_restart(pki, tmp_path):
    ca, _, paths = pki
    proc, http, grpc, log = _serve(tmp_path, ["--tls-cert", str(paths["cert"]), "--tls-key", str(paths["key"])])
    try:
        assert _ready(http, ca), log.read_text()
        before = ssl.get_server_certificate(("127.0.0.1", http))
        renewed = ca.issue_cert("127.0.0.1", "localhost")
        # The key first, then the chain: a pair caught half-written is
        # retried by the server, not served.
        renewed.private_key_pem.write_to_path(str(paths["key"]))
        with open(paths["cert"], "wb") as f:
            for blob in renewed.cert_chain_pems:
                f.write(blob.bytes())
        end = time.monotonic() + 15
        after = before
        while after == before and time.monotonic() < end:
            time.sleep(0.5)
            after = ssl.get_server_certificate(("127.0.0.1", http))
        assert after != before, "the new certificate is served within 15 s"
        assert after.strip() == renewed.cert_chain_pems[0].bytes().decode().strip()
        assert proc.poll() is None
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        _infer_http(httpclient.InferenceServerClient(f"127.0.0.1:{http}", ssl=True,
                                                     ssl_context_factory=lambda: ctx))
        assert "TLS certificate reloaded" in log.read_text()
    finally:
        problem = _stop(proc)
    assert problem is None, problem


def test_a_certificate_that_does_not_load_stops_start_up_naming_it(pki, tmp_path):
    ca, client, paths = pki
    other = ca.issue_cert("127.0.0.1")
    other.private_key_pem.write_to_path(str(tmp_path / "other-key.pem"))
    for cert, key, named in [
        (tmp_path / "missing.pem", paths["key"], "missing.pem"),
        (paths["cert"], tmp_path / "other-key.pem", "do not belong together"),
    ]:
        proc, _, _, log = _serve(tmp_path, ["--tls-cert", str(cert), "--tls-key", str(key)])
        assert proc.wait(timeout=30) != 0
        assert named in log.read_text(), log.read_text()


def test_the_metrics_port_speaks_tls_when_asked_and_mutual_tls_covers_it(pki, tmp_path):
    ca, client, paths = pki
    tls = ["--tls-cert", str(paths["cert"]), "--tls-key", str(paths["key"])]
    # Without --tls-metrics the metrics port stays plain beside TLS ports.
    proc, http, _, log = _serve(tmp_path, tls)
    try:
        assert _ready(http, ca), log.read_text()
        plain = urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=10).read()
        assert b"infergate_" in plain
    finally:
        problem = _stop(proc)
    assert problem is None, problem

    proc, http, _, log = _serve(tmp_path, tls + ["--tls-client-ca", str(paths["ca"]), "--tls-metrics"])
    try:
        assert _ready(http, ca, client), log.read_text()
        url = f"https://127.0.0.1:{proc.metrics_port}/metrics"
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        client.configure_cert(ctx)
        body = urllib.request.urlopen(url, context=ctx, timeout=10).read().decode()
        assert "infergate_requests_total" in body or "infergate_" in body, body[:500]
        # A scraper without a client certificate: refused in the handshake.
        anonymous = ssl.create_default_context()
        ca.configure_trust(anonymous)
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionResetError)):
            urllib.request.urlopen(url, context=anonymous, timeout=10).read()
        # Plaintext to it: nothing served; TLS still is.
        _plaintext_gets_nothing(proc.metrics_port, "/metrics")
        assert b"infergate_" in urllib.request.urlopen(url, context=ctx, timeout=10).read()
        _prometheus_scrapes_over_mutual_tls(tmp_path, proc.metrics_port, client, paths)
    finally:
        problem = _stop(proc)
    assert problem is None, problem


def _prometheus_scrapes_over_mutual_tls(tmp_path, metrics_port, client, paths):
    """A real Prometheus (as test_prometheus.py starts it) with scheme https,
    the test's CA and the client certificate: its target comes up."""
    import json
    from pathlib import Path
    prometheus = Path(os.environ.get("PROMETHEUS_BIN", REPO_ROOT / ".prometheus/usr/bin/prometheus"))
    assert prometheus.is_file(), f"no Prometheus at {prometheus}: bash scripts/setup.sh --test"
    client.private_key_pem.write_to_path(str(tmp_path / "scraper-key.pem"))
    with open(tmp_path / "scraper-cert.pem", "wb") as f:
        for blob in client.cert_chain_pems:
            f.write(blob.bytes())
    (port,) = _free_ports(1)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: infergate\n"
        "    scheme: https\n"
        "    tls_config:\n"
        f"      ca_file: {paths['ca']}\n"
        f"      cert_file: {tmp_path / 'scraper-cert.pem'}\n"
        f"      key_file: {tmp_path / 'scraper-key.pem'}\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n")
    log = open(tmp_path / "prometheus.log", "wb")
    p = subprocess.Popen([str(prometheus), f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'prom'}",
                          f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                         stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        end, health = time.monotonic() + 60, None
        while time.monotonic() < end:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/targets", timeout=5) as r:
                    targets = json.load(r)["data"]["activeTargets"]
                if targets:
                    health = (targets[0]["health"], targets[0].get("lastError"))
                    if health[0] == "up":
                        break
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        assert health and health[0] == "up", f"{health}\n{(tmp_path / 'prometheus.log').read_text()}"
    finally:
        p.terminate()
        p.wait(timeout=30)


def test_tls_metrics_without_a_certificate_is_refused_at_start(tmp_path):
    proc, _, _, log = _serve(tmp_path, ["--tls-metrics"])
    try:
        assert proc.wait(timeout=30) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "tls-cert" in log.read_text(), log.read_text()
