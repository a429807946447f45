"""What deploy/ ships, checked against the real tools:

- deploy/prometheus/rules.yml: `promtool check rules`, and its unit tests
  (`promtool test rules rules_test.yml`: each alert fires on the series
  that should fire it and on no other), then loaded by a real Prometheus;
- deploy/grafana/infergate.json: every panel's query, run by a real
  Prometheus scraping a real server after traffic that exercises it (a
  shadow, labels, drifted inputs, a version that fails to load), parses and
  returns at least one series.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from _support import start_server, wait_for
from conftest import REPO_ROOT, _binary, _free_ports, _stop

PROMETHEUS_DIR = Path(os.environ.get("PROMETHEUS_DIR", REPO_ROOT / ".prometheus/usr/bin"))
DEPLOY = REPO_ROOT / "deploy"
DEADLINE_S = 90


def promtool(*args: str) -> subprocess.CompletedProcess:
    tool = PROMETHEUS_DIR / "promtool"
    assert tool.is_file(), f"no promtool at {tool}: run `bash scripts/setup.sh --test`"
    return subprocess.run([str(tool), *args], capture_output=True, text=True, timeout=120)


def test_alert_rules_are_valid_and_pass_their_unit_tests():
    checked = promtool("check", "rules", str(DEPLOY / "prometheus/rules.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 10 rules found" in checked.stdout, checked.stdout
    tested = promtool("test", "rules", str(DEPLOY / "prometheus/rules_test.yml"))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def _post(base: str, path: str, body: dict) -> dict:
    req = urllib.request.Request(base + path, json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def _query(port: int, promql: str) -> dict:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:  # a query that does not parse: 400 with the error
        return json.load(e)


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of the dashboard, with
    Grafana's variables as a dashboard showing every model would set them."""
    board = json.loads((DEPLOY / "grafana/infergate.json").read_text())
    queries = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "30s").replace("$model", ".*")
            queries.append((panel["title"], expr))
    return queries


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A server with digits (a broken version 3 beside it) and tiny, short
    statistics windows, and a Prometheus scraping it every second with the
    alert rules loaded."""
    root = tmp_path_factory.mktemp("deploy")
    repo = root / "models"
    for model in ("digits", "tiny"):
        shutil.copytree(REPO_ROOT / "models" / model, repo / model)
    config = repo / "digits" / "config.toml"
    config.write_text(config.read_text().replace("max_p99_ms = 50.0", "max_p99_ms = 5000.0"))
    (repo / "digits" / "3").mkdir()
    (repo / "digits" / "3" / "model.onnx").write_text("not a model")
    server, base, metrics = start_server(repo, root / "server.log", "--stats-window", "2s")
    (prom,) = _free_ports(1)
    prom_config = root / "prometheus.yml"
    prom_config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {DEPLOY / 'prometheus/rules.yml'}\n"
        "scrape_configs:\n  - job_name: infergate\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{metrics}']\n")
    with open(root / "prometheus.log", "wb") as log:
        prometheus = subprocess.Popen(
            [str(PROMETHEUS_DIR / "prometheus"), f"--config.file={prom_config}",
             f"--storage.tsdb.path={root / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom}",
             "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT)
    try:
        yield base, prom
    finally:
        _stop(prometheus)
        problem = _stop(server)
        assert problem is None, problem


def test_every_dashboard_query_returns_series_after_traffic(served):
    base, prom = served
    data = json.loads((REPO_ROOT / "models/digits/data/heldout.json").read_text())
    rows, labels = np.array(data["features"], dtype=np.float32), data["labels"]
    _post(base, "/v2/models/digits/shadow", {"version": 1, "sample_rate": 1.0})

    def send(batch, tag):
        for k, row in enumerate(batch):
            _post(base, "/v2/models/digits/infer", {
                "id": f"{tag}-{k}",
                "inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row.tolist()}]})
        _post(base, "/v2/models/tiny/infer", {
            "inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]})

    queries = dashboard_queries()
    assert len(queries) >= 20, queries
    missing = queries
    deadline = time.monotonic() + DEADLINE_S
    round_ = 0
    while missing and time.monotonic() < deadline:
        # Normal rows with their labels, then inverted ones (drift).
        batch = rows[(round_ * 120) % 240:(round_ * 120) % 240 + 120]
        send(batch, f"n{round_}")
        _post(base, "/v2/models/digits/feedback", {"labels": [
            {"id": f"n{round_}-{k}", "label": [int(labels[(round_ * 120) % 240 + k])]} for k in range(len(batch))]})
        send(16 - batch, f"d{round_}")
        round_ += 1
        still = []
        for title, expr in missing:
            answer = _query(prom, expr)
            assert answer.get("status") == "success", f"{title}: {expr}: {answer}"
            if not answer["data"]["result"]:
                still.append((title, expr))
        missing = still
    assert not missing, f"queries with no series after {round_} rounds of traffic: {missing}"
    # The rules loaded in a real Prometheus, every one healthy.
    with urllib.request.urlopen(f"http://127.0.0.1:{prom}/api/v1/rules", timeout=5) as r:
        groups = json.load(r)["data"]["groups"]
    rules = [rule for g in groups for rule in g["rules"]]
    assert len(rules) == 10 and all(rule["health"] == "ok" for rule in rules), rules
    # Drifted inputs and a version that did not load: their alerts pend or fire.
    alerts = {a["labels"]["alertname"] for a in
              json.load(urllib.request.urlopen(f"http://127.0.0.1:{prom}/api/v1/alerts", timeout=5))["data"]["alerts"]}
    assert {"InfergateDriftDetected", "InfergateVersionFailedToLoad"} <= alerts, alerts


def test_rollout_gauges_follow_the_model_table(served):
    base, prom = served

    def value(promql: str) -> float | None:
        result = _query(prom, promql)["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def wait_value(promql: str, want: float):
        wait_for(f"{promql} = {want}", lambda: value(promql) == want, 30, 0.5)

    wait_value('infergate_model_versions{model="digits",state="READY"}', 2)
    wait_value('infergate_model_versions{model="digits",state="UNAVAILABLE"}', 1)
    before = value('infergate_rollout_generation{model="digits"}') or 0
    answer = _post(base, "/v2/models/digits/promote", {"version": 1})
    assert answer["primary"] == "1", answer
    wait_value('infergate_model_primary{model="digits"}', 1)
    wait_value('infergate_rollout_generation{model="digits"}', answer["rollout_file"]["generation"])
    assert answer["rollout_file"]["generation"] > before
    _post(base, "/v2/models/digits/rollback", {})
    wait_value('infergate_model_primary{model="digits"}', 2)


KUBE_VERSION = "1.32.0"


def _kubernetes_validate(*paths: Path) -> subprocess.CompletedProcess:
    tool = REPO_ROOT / ".venv/bin/kubernetes-validate"
    return subprocess.run([str(tool), "--strict", "-k", KUBE_VERSION, *map(str, paths)],
                          capture_output=True, text=True, timeout=120)


def test_kubernetes_manifests_pass_strict_schema_validation(tmp_path):
    manifests = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
    kinds = {yaml_kind(p) for p in manifests}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds, kinds
    done = _kubernetes_validate(*manifests)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("passed for resource") == len(manifests), done.stdout
    # Strict means strict: a misspelt field fails.
    bad = tmp_path / "bad.yaml"
    bad.write_text((DEPLOY / "kubernetes/deployment.yaml").read_text().replace("  replicas: 3", "  replicass: 3"))
    done = _kubernetes_validate(bad)
    assert done.returncode != 0 and "replicass" in done.stdout, done.stdout


def yaml_kind(path: Path) -> str:
    import yaml

    return yaml.safe_load(path.read_text())["kind"]


def test_kserve_manifests_use_the_runtime_kserve_expects(tmp_path):
    """KServe's kinds have no schema in kubernetes-validate (they are custom
    resources): their container is checked as a Kubernetes container (in a
    Pod, strictly), the rest against what KServe documents for a v2 runtime."""
    import yaml

    runtime = yaml.safe_load((DEPLOY / "kserve/servingruntime.yaml").read_text())
    service = yaml.safe_load((DEPLOY / "kserve/inferenceservice.yaml").read_text())
    assert runtime["apiVersion"] == "serving.kserve.io/v1alpha1" and runtime["kind"] == "ServingRuntime"
    assert service["apiVersion"] == "serving.kserve.io/v1beta1" and service["kind"] == "InferenceService"
    spec = runtime["spec"]
    assert set(spec) <= {"supportedModelFormats", "protocolVersions", "containers", "annotations",
                         "multiModel", "disabled", "volumes", "nodeSelector", "tolerations"}, spec
    assert {"v2", "grpc-v2"} <= set(spec["protocolVersions"])
    assert {"name": "onnx", "version": "1", "autoSelect": True, "priority": 2} in spec["supportedModelFormats"]
    (container,) = spec["containers"]
    assert container["name"] == "kserve-container"
    args = container["args"]
    for flag in ("--model-repository=/mnt/models", "--http-port=8080", "--grpc-port=8081"):
        assert flag in args, args
    # The flags are the server's own: `infergate serve --help` knows them all.
    helptext = subprocess.run([str(_binary()), "serve", "--help"], capture_output=True, text=True).stdout
    for flag in args[1:]:
        assert flag.split("=")[0] in helptext, flag
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] == "onnx" and model["protocolVersion"] == "v2"
    # The container, strictly, as Kubernetes checks any container.
    pod = tmp_path / "pod.yaml"
    pod.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "kserve-container"},
                                   "spec": {"containers": [container]}}))
    done = _kubernetes_validate(pod)
    assert done.returncode == 0 and "passed" in done.stdout, done.stdout + done.stderr
