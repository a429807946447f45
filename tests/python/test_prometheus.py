"""A real Prometheus (Debian's package, unpacked into .prometheus/ by
`scripts/setup.sh --test`) scrapes infergate's /metrics on loopback, and PromQL
queries over what it stored return values: the latency histogram's p99
through histogram_quantile, and the window statistics' gauges."""

from __future__ import annotations

import json
import math
import os
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient

from conftest import REPO_ROOT, _free_ports, _stop

PROMETHEUS = Path(os.environ.get("PROMETHEUS_BIN", REPO_ROOT / ".prometheus/usr/bin/prometheus"))
DEADLINE_S = 60


def _query(port: int, promql: str) -> list:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    assert body["status"] == "success", body
    return body["data"]["result"]


@pytest.fixture
def prometheus(server, tmp_path):
    assert PROMETHEUS.is_file(), (
        f"no Prometheus at {PROMETHEUS}: run `bash scripts/setup.sh --test` (or set PROMETHEUS_BIN)"
    )
    (port,) = _free_ports(1)
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: infergate\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{server.metrics_port}']\n"
    )
    log = open(tmp_path / "prometheus.log", "wb")
    process = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield port
    finally:
        problem = _stop(process)
        log.close()
        if problem and "SIGTERM" in problem:
            pytest.fail(problem)


def test_prometheus_scrapes_and_answers_a_p99_query(server, prometheus):
    client = httpclient.InferenceServerClient(server.http_url)
    x = np.ones((1, 16), dtype=np.float32)
    stop = threading.Event()

    def traffic():
        # Steady load for as long as the test waits, bounded by the deadline.
        end = time.monotonic() + DEADLINE_S
        while not stop.is_set() and time.monotonic() < end:
            inp = httpclient.InferInput("input", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            client.infer("tiny", [inp])
            time.sleep(0.01)

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    p99 = up = None
    deadline = time.monotonic() + DEADLINE_S
    try:
        while time.monotonic() < deadline:
            try:
                up = _query(prometheus, 'up{job="infergate"}')
                result = _query(
                    prometheus,
                    "histogram_quantile(0.99, sum by (le) "
                    '(rate(infergate_request_duration_seconds_bucket{model="tiny"}[10s])))',
                )
            except OSError:
                result = []  # Prometheus still starting
            if result and not math.isnan(float(result[0]["value"][1])):
                p99 = float(result[0]["value"][1])
                break
            time.sleep(0.5)
    finally:
        stop.set()
        sender.join()
        client.close()
    assert up and up[0]["value"][1] == "1", f"infergate not up in Prometheus: {up}"
    assert p99 is not None, "histogram_quantile(0.99, ...) returned no value in time"
    # Within the histogram's range: 50 µs .. 10 s.
    assert 0 < p99 <= 10, p99
    # The model facts reached Prometheus too.
    info = _query(prometheus, 'infergate_model_info{model="digits",version="2"}')
    assert info and info[0]["metric"]["backend"] == "onnxruntime_onnx", info
