"""Three replicas on a real orchestrator: Docker Engine (Debian's docker.io,
a daemon this test starts and ends) in Swarm mode on 127.0.0.1, the stack of
deploy/swarm/stack.yml with the image scripts/image.sh builds FROM scratch,
haproxy (deploy/swarm/haproxy.cfg) in front and a real Prometheus
(deploy/swarm/prometheus.yml) finding the replicas through the Docker API.

Under load through the balancer, it shows that requests reach every
replica (their own metrics say so); a killed task is replaced and no
request fails; a rolling update to a new image fails none; a promote sent
to one replica through the balancer is followed by all (rollout.toml on
the shared repository); and Prometheus' `sum by (version)` of the
replicas' request counters equals what was sent. It prints how the
balancer carried the requests (haproxy's retries and redispatches) and how
long each step took.

The engine runs with its own data and socket under a temporary folder and
touches no firewall (--iptables=false, no bridge); everything it made (the
stack, the swarm, the daemon, its mounts and the bridge the swarm adds) is
removed at the end, and the test checks that the firewall rules are as
they were.
"""

from __future__ import annotations

import collections
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from _support import wait_for
from conftest import REPO_ROOT, _binary, _free_ports

DOCKERD = "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker"
HAPROXY = "/usr/sbin/haproxy"
PROMETHEUS = REPO_ROOT / ".prometheus/usr/bin/prometheus"
SERVICE = "infergate_infergate"
SLOTS = (1, 2, 3)
STEPS: dict[str, float] = {}


def http_port(slot: int) -> int:
    return 8000 + 10 * slot


def run(*args: str, env: dict | None = None, timeout: float = 180, check: bool = True) -> str:
    done = subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done.stdout


def get_json(url: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data, method="GET" if body is None else "POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def firewall() -> str:
    """The rules, without the comment lines and packet counters."""
    rules = []
    for tool in ("iptables-save", "ip6tables-save"):
        if shutil.which(tool):
            out = subprocess.run([tool], capture_output=True, text=True).stdout
            rules += [line.split(" [")[0] for line in out.splitlines() if not line.startswith("#")]
    return "\n".join(rules)


class Swarm:
    def __init__(self, root: Path):
        self.root = root
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{root}/docker.sock")
        self.lb_http, self.lb_grpc, self.prom_port, self.swarm_port = _free_ports(4)

    def docker(self, *args: str, env: dict | None = None, **kw) -> str:
        return run(DOCKER, *args, env=env or self.env, **kw)

    def tasks(self) -> list[dict]:
        """The service's running tasks: slot, task id, image."""
        out = self.docker("service", "ps", SERVICE, "--no-trunc", "--filter", "desired-state=running",
                          "--format", "{{json .}}")
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]
        return [{"slot": int(r["Name"].rsplit(".", 1)[1]), "id": r["ID"], "image": r["Image"],
                 "state": r["CurrentState"]} for r in rows]

    def healthy(self, image: str) -> bool:
        """Every slot runs `image` and answers ready."""
        tasks = self.tasks()
        if sorted(t["slot"] for t in tasks) != list(SLOTS):
            return False
        if any(t["image"] != image or not t["state"].startswith("Running") for t in tasks):
            return False
        return all(
            urllib.request.urlopen(f"http://127.0.0.1:{http_port(s)}/v2/health/ready", timeout=2).status == 200
            for s in SLOTS)

    def haproxy_stats(self) -> dict[str, dict[str, int]]:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.root / "haproxy.sock"))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        stats = {}
        for line in lines[1:]:
            f = dict(zip(header, line.split(",")))
            if f.get("pxname") == "replicas_http":
                stats[f["svname"]] = {k: int(f[k] or 0) for k in ("stot", "wretr", "wredis", "eresp", "econ")}
        return stats

    def query(self, promql: str) -> list:
        url = f"http://127.0.0.1:{self.prom_port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        return get_json(url)["data"]["result"]


class Load:
    """Requests to `tiny` through the balancer from two clients, until stopped:
    every answer's status, and every failure."""

    BODY = json.dumps({"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32",
                                   "data": [0.5] * 16}]})

    def __init__(self, port: int):
        self.port = port
        self.stop = threading.Event()
        self.counts: collections.Counter = collections.Counter()
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(2)]
        for t in self.threads:
            t.start()

    def client(self):
        conn = None
        while not self.stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                conn.request("POST", "/v2/models/tiny/infer", self.BODY, {"content-type": "application/json"})
                r = conn.getresponse()
                body = r.read()
                self.counts[r.status] += 1
                if r.status != 200:
                    self.failures.append(f"{r.status}: {body[:200]!r}")
            except (OSError, http.client.HTTPException) as e:
                self.failures.append(repr(e))
                conn = None
            time.sleep(0.002)

    def finish(self) -> collections.Counter:
        self.stop.set()
        for t in self.threads:
            t.join()
        return self.counts


def _unmount_under(path: Path):
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for m in sorted((m for m in mounts if m.startswith(str(path))), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], capture_output=True)


@pytest.fixture(scope="module")
def swarm():
    assert os.geteuid() == 0, "the Swarm test starts a Docker daemon: run it as root"
    for tool in (DOCKERD, DOCKER, HAPROXY, str(PROMETHEUS)):
        assert Path(tool).exists(), f"{tool} is missing: bash scripts/setup.sh --test installs it"
    # A short path: the daemon's sockets live under it.
    root = Path(subprocess.run(["mktemp", "-d", "/tmp/igswarm.XXXX"], capture_output=True, text=True).stdout.strip())
    s = Swarm(root)
    rules_before = firewall()
    had_run_docker = Path("/run/docker").exists()
    processes: list[subprocess.Popen] = []
    began = time.monotonic()
    try:
        log = open(root / "dockerd.log", "wb")
        dockerd = subprocess.Popen(
            [DOCKERD, "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
             "-H", f"unix://{root}/docker.sock", "--pidfile", str(root / "docker.pid"),
             "--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false",
             "--bridge=none", "--log-level=warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        processes.append(dockerd)
        wait_for("the Docker daemon", lambda: s.docker("info", "--format", "{{.ServerVersion}}", check=False).strip(), 60)
        s.docker("swarm", "init", "--advertise-addr", "127.0.0.1",
                 "--listen-addr", f"127.0.0.1:{s.swarm_port}")
        STEPS["engine and swarm up"] = time.monotonic() - began

        # The image, from the binary the other tests run.
        t = time.monotonic()
        image_env = dict(s.env, DOCKER=DOCKER, TAG="test", BIN=str(_binary()))
        run("bash", str(REPO_ROOT / "scripts/image.sh"), env=image_env, timeout=600)
        build2 = subprocess.run([DOCKER, "build", "-q", "-t", "infergate:test2", "-"],
                                input="FROM infergate:test\nLABEL org.infergate.build=2\n",
                                env=s.env, capture_output=True, text=True, timeout=120)
        assert build2.returncode == 0, build2.stderr
        STEPS["images built"] = time.monotonic() - t

        # One repository for the three, owned by the image's user.
        models = root / "models"
        for m in ("digits", "tiny"):
            shutil.copytree(REPO_ROOT / "models" / m, models / m)
        config = models / "digits" / "config.toml"
        config.write_text(config.read_text().replace("max_p99_ms = 50.0", "max_p99_ms = 5000.0"))
        subprocess.run(["chown", "-R", "65532:65532", str(models)], check=True)

        t = time.monotonic()
        s.docker("stack", "deploy", "--resolve-image", "never", "-c",
                 str(REPO_ROOT / "deploy/swarm/stack.yml"), "infergate",
                 env=dict(s.env, MODELS=str(models), TAG="test"))
        wait_for("three healthy replicas", lambda: s.healthy("infergate:test"), 180)
        STEPS["stack deployed, 3 replicas ready"] = time.monotonic() - t

        with open(root / "haproxy.log", "wb") as hlog:
            processes.append(subprocess.Popen(
                [HAPROXY, "-db", "-f", str(REPO_ROOT / "deploy/swarm/haproxy.cfg")],
                env=dict(os.environ, LB_HTTP_PORT=str(s.lb_http), LB_GRPC_PORT=str(s.lb_grpc),
                         HAPROXY_STATS=str(root / "haproxy.sock")),
                stdout=hlog, stderr=subprocess.STDOUT))
        prom_config = root / "prometheus.yml"
        prom_config.write_text(
            (REPO_ROOT / "deploy/swarm/prometheus.yml").read_text()
            .replace("unix:///var/run/docker.sock", f"unix://{root}/docker.sock")
            .replace("../prometheus/rules.yml", str(REPO_ROOT / "deploy/prometheus/rules.yml")))
        with open(root / "prometheus.log", "wb") as plog:
            processes.append(subprocess.Popen(
                [str(PROMETHEUS), f"--config.file={prom_config}", f"--storage.tsdb.path={root / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{s.prom_port}", "--log.level=warn"],
                stdout=plog, stderr=subprocess.STDOUT))
        wait_for("the balancer", lambda: (root / "haproxy.sock").exists(), 30)
        yield s
    finally:
        t = time.monotonic()
        for p in reversed(processes[1:]):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        if processes:
            s.docker("stack", "rm", "infergate", check=False)
            wait_for("the stack's containers gone",
                     lambda: s.docker("ps", "-aq", check=False).strip() == "", 60)
            s.docker("swarm", "leave", "--force", check=False)
            # The bridge the swarm made for its (unused) ingress network.
            s.docker("network", "rm", "docker_gwbridge", check=False)
            dockerd = processes[0]
            dockerd.send_signal(signal.SIGTERM)
            try:
                dockerd.wait(timeout=30)
            except subprocess.TimeoutExpired:
                dockerd.kill()
                dockerd.wait()
        subprocess.run(["ip", "link", "delete", "docker_gwbridge"], capture_output=True)
        _unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)
        if not had_run_docker:
            shutil.rmtree("/run/docker", ignore_errors=True)
        STEPS["cleaned up"] = time.monotonic() - t
        assert firewall() == rules_before, "the firewall rules changed"
        STEPS["whole test"] = time.monotonic() - began
        print("\nSwarm test steps (s): " + ", ".join(f"{k} {v:.1f}" for k, v in STEPS.items()))


def replica_requests(slot: int, model: str) -> float:
    """The replica's own count of answered requests for `model`."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{8002 + 10 * slot}/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("infergate_requests_total{") and f'model="{model}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_replicas_behind_a_balancer_on_swarm(swarm):
    s = swarm
    # 1. Requests reach every replica: their own metrics say so.
    load = Load(s.lb_http)
    wait_for("requests on every replica", lambda: all(replica_requests(k, "tiny") > 20 for k in SLOTS), 60)
    # gRPC through the balancer too (HTTP/2 to the replicas' gRPC ports).
    import numpy as np
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{s.lb_grpc}")
    inp = grpcclient.InferInput("input", [1, 16], "FP32")
    inp.set_data_from_numpy(np.arange(16, dtype=np.float32).reshape(1, 16))
    for _ in range(6):
        out = client.infer("tiny", [inp]).as_numpy("output")
        assert out.tolist() == [[2 * x + 1 for x in range(16)]], out
    client.close()

    # 2. A killed task is replaced, and no request fails.
    t = time.monotonic()
    killed = next(x for x in s.tasks() if x["slot"] == 2)
    container = s.docker("ps", "-q", "--filter", f"label=com.docker.swarm.task.id={killed['id']}").strip()
    s.docker("kill", container)
    wait_for("slot 2 replaced by a new task",
             lambda: any(x["slot"] == 2 and x["id"] != killed["id"] for x in s.tasks())
             and s.healthy("infergate:test"), 120)
    STEPS["killed task replaced"] = time.monotonic() - t
    after_kill = dict(load.counts)
    assert load.failures == [], load.failures[:5]
    carried = s.haproxy_stats()

    # 3. A rolling update to a new image, one replica at a time: no request fails.
    t = time.monotonic()
    s.docker("service", "update", "--detach=false", "--quiet", "--image", "infergate:test2",
             "--no-resolve-image", SERVICE, timeout=300)
    wait_for("every replica on the new image", lambda: s.healthy("infergate:test2"), 120)
    STEPS["rolling update"] = time.monotonic() - t
    counts = load.finish()
    assert load.failures == [], load.failures[:5]
    assert set(counts) == {200}, counts
    stats = s.haproxy_stats()
    print(f"\nthrough the balancer: {after_kill.get(200, 0)} requests by the kill's end, "
          f"{counts[200]} in all, none failed; haproxy after the kill {carried['BACKEND']}, "
          f"after the update {stats['BACKEND']} (wretr: retried on a failed connection or empty "
          f"answer; wredis: sent to another replica)")
    # Both mechanisms carried requests: the health checks took the replica
    # out, and the requests caught in between were sent again.
    assert stats["BACKEND"]["wredis"] > 0, stats

    # 4. A promote sent to one replica through the balancer is followed by all.
    t = time.monotonic()
    lb = f"http://127.0.0.1:{s.lb_http}"
    answer = get_json(lb + "/v2/models/digits/promote", {"version": 1})
    assert answer["primary"] == "1" and "generation" in answer["rollout_file"], answer
    wait_for("every replica on primary 1", lambda: all(
        get_json(f"http://127.0.0.1:{http_port(k)}/v2/models/digits/health")["deployment"]["primary"] == "1"
        for k in SLOTS), 30, every=0.1)
    STEPS["promote followed by all"] = time.monotonic() - t

    # 5. Prometheus finds the three and counts what was sent, by version.
    def counted() -> dict[str, float] | None:
        ups = s.query('up{job="infergate"}')
        if len(ups) != 3 or any(u["value"][1] != "1" for u in ups):
            return None
        result = s.query('sum by (version) (infergate_requests_total{model="digits", protocol="http"})')
        return {r["metric"]["version"]: float(r["value"][1]) for r in result}

    def settled() -> dict[str, float]:
        # Two scrapes that agree, with every replica in them.
        first = wait_for("Prometheus scraping the three replicas", counted, 60)
        time.sleep(5)
        second = counted()
        return second if second == first else None

    before = wait_for("Prometheus' counts to settle", settled, 60)
    rows = json.loads((REPO_ROOT / "models/digits/data/heldout.json").read_text())["features"]
    sent = collections.Counter()

    def send(n: int):
        for k in range(n):
            body = {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": rows[k % len(rows)]}]}
            sent[get_json(lb + "/v2/models/digits/infer", body)["model_version"]] += 1

    send(150)
    get_json(lb + "/v2/models/digits/rollback", {})
    wait_for("every replica back on primary 2", lambda: all(
        get_json(f"http://127.0.0.1:{http_port(k)}/v2/models/digits/health")["deployment"]["primary"] == "2"
        for k in SLOTS), 30, every=0.1)
    send(90)
    assert sent == {"1": 150, "2": 90}, sent
    after = wait_for("Prometheus' counts to settle", settled, 60)
    grown = {v: after.get(v, 0) - before.get(v, 0) for v in set(after) | set(before)}
    assert {v: n for v, n in grown.items() if n} == {"1": 150.0, "2": 90.0}, (before, after)
