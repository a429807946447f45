"""The soak's driver (benches/soak.sh starts the server and builds; this runs
the rest): open-loop load over gRPC and HTTP while the repository and the
control plane churn, the server's RSS, file descriptors and threads sampled
throughout, then the verdicts.

Pass, as issue 14 asks: no admitted request fails (a refusal, 503 /
UNAVAILABLE, is not a failure but is reported); RSS over the run's last
stretch is within 10 % of RSS once warm (after the first minute, or the
first third of a shorter run; medians over whole cycles of the churn); once the churn is undone and the load has stopped, as many
threads and file descriptors as before the load; and the server counted
every request the load generators sent, protocol by protocol.

    python3 benches/soak.py --http H --grpc G --metrics M --pid P --repo R \
        --loadtest BIN --duration 600 [--rate 300] [--step 3] [--out FILE]
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

MODEL = "digits"


def proc(pid):
    """(RSS in KiB, open file descriptors, threads) of a process."""
    status = open(f"/proc/{pid}/status").read()
    rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
    threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
    return rss, len(os.listdir(f"/proc/{pid}/fd")), threads


def call(base, method, path, body=None):
    """An HTTP call; (status, parsed JSON or text). Never raises on a status."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def put_version(repo, version, broken=False):
    """A new version directory, written beside and renamed into place so the
    poller never sees half of it."""
    tmp = os.path.join(repo, MODEL, f".tmp-{version}")
    shutil.rmtree(tmp, ignore_errors=True)
    if broken:
        os.makedirs(tmp)
        open(os.path.join(tmp, "model.onnx"), "wb").write(b"not an ONNX model\x00" * 64)
    else:
        shutil.copytree(os.path.join(repo, MODEL, "2"), tmp)
    os.rename(tmp, os.path.join(repo, MODEL, str(version)))


def drop_version(repo, version):
    shutil.rmtree(os.path.join(repo, MODEL, str(version)), ignore_errors=True)


def churn(args, stop, log):
    """One action every --step seconds, round and round, until `stop`."""
    base = f"http://127.0.0.1:{args.http}"
    m = f"/v2/models/{MODEL}"
    actions = [
        ("add version 3", lambda: put_version(args.repo, 3)),
        ("drop in broken version 4", lambda: put_version(args.repo, 4, broken=True)),
        ("promote 1", lambda: call(base, "POST", f"{m}/promote", {"version": "1"})),
        ("start shadow 2", lambda: call(base, "POST", f"{m}/shadow", {"version": "2"})),
        ("rollback", lambda: call(base, "POST", f"{m}/rollback", {})),
        ("stop shadow", lambda: call(base, "DELETE", f"{m}/shadow")),
        ("remove versions 3 and 4", lambda: (drop_version(args.repo, 3), drop_version(args.repo, 4))),
        ("unload tiny", lambda: call(base, "POST", "/v2/repository/models/tiny/unload", {})),
        ("load tiny", lambda: call(base, "POST", "/v2/repository/models/tiny/load", {})),
        (f"reload {MODEL}", lambda: call(base, "POST", f"/v2/repository/models/{MODEL}/load", {})),
    ]
    i = 0
    while not stop.wait(args.step):
        name, act = actions[i % len(actions)]
        result = act()
        status = result[0] if isinstance(result, tuple) and isinstance(result[0], int) else None
        log.append((name, status, result[1][:200] if status else b""))
        i += 1
    return i


def sampler(pid, every, stop, series, t0):
    while True:
        series.append((time.monotonic() - t0, *proc(pid)))
        if stop.wait(every):
            return


def requests_counted(metrics_port):
    """infergate_requests_total for the model, summed over versions and
    statuses, by protocol."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    counts = {}
    for line in text.splitlines():
        if not line.startswith("infergate_requests_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
        if labels.get("model") == MODEL:
            p = labels["protocol"]
            counts[p] = counts.get(p, 0) + float(line.rsplit(" ", 1)[1])
    return counts


def settle(pid, want, seconds):
    """Waits up to `seconds` for (fds, threads) to come back to `want`."""
    deadline = time.monotonic() + seconds
    while True:
        _, fds, threads = proc(pid)
        if (fds <= want[0] and threads <= want[1]) or time.monotonic() > deadline:
            return fds, threads
        time.sleep(0.5)


def main():
    ap = argparse.ArgumentParser()
    for name in ("http", "grpc", "metrics", "pid"):
        ap.add_argument(f"--{name}", type=int, required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--loadtest", required=True)
    ap.add_argument("--duration", type=float, default=600)
    ap.add_argument("--rate", type=float, default=300, help="requests/s due per protocol")
    ap.add_argument("--step", type=float, default=3, help="seconds between churn actions")
    ap.add_argument("--sample", type=float, default=5, help="seconds between RSS samples")
    ap.add_argument("--poll", type=float, default=1, help="the server's --poll-interval, seconds")
    ap.add_argument("--out")
    args = ap.parse_args()

    before_counts = requests_counted(args.metrics)
    _, fds0, threads0 = proc(args.pid)
    t0 = time.monotonic()
    stop, log, series = threading.Event(), [], []
    samp = threading.Thread(target=sampler, args=(args.pid, args.sample, stop, series, t0))
    samp.start()

    loads = {}
    for protocol, port in (("grpc", args.grpc), ("http-binary", args.http)):
        cmd = [args.loadtest, "--target", f"127.0.0.1:{port}", "--protocol", protocol, "--model", MODEL,
               "--rate", str(args.rate), "--duration", f"{args.duration}s", "--warmup", "0s",
               "--connections", "8" if protocol == "grpc" else "32", "--json", "--quiet"]
        loads[protocol] = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    churned = [0]
    worker = threading.Thread(target=lambda: churned.__setitem__(0, churn(args, stop, log)))
    worker.start()

    reports = {p: json.loads(l.communicate()[0]) for p, l in loads.items()}
    stop.set()
    worker.join()
    samp.join()

    # Undo the churn: versions 1 and 2 on disk, no shadow, tiny loaded.
    base = f"http://127.0.0.1:{args.http}"
    drop_version(args.repo, 3)
    drop_version(args.repo, 4)
    call(base, "DELETE", f"/v2/models/{MODEL}/shadow")
    call(base, "POST", "/v2/repository/models/tiny/load", {})
    time.sleep(3 * args.poll + 1)
    fds1, threads1 = settle(args.pid, (fds0, threads0), 15)
    after_counts = requests_counted(args.metrics)

    # Verdicts.
    lines, failures = [], []
    # RSS moves with the churn (a third version loaded, or not), so compare
    # like with like: the median over at least one whole cycle of actions
    # just after warming up, against the same over the run's last stretch.
    warm_at = min(60.0, args.duration / 3)
    span = max(10 * args.step, (args.duration - warm_at) / 4)
    median = lambda xs: sorted(xs)[len(xs) // 2]
    early = [s[1] for s in series if warm_at <= s[0] < warm_at + span] or [series[0][1]]
    late = [s[1] for s in series if s[0] >= series[-1][0] - span] or [series[-1][1]]
    warm, end = median(early), median(late)
    peak = max(s[1] for s in series)
    lines.append(f"soak: {args.duration:.0f} s, {args.rate:.0f} req/s due per protocol, "
                 f"{churned[0]} churn actions (one every {args.step:g} s)")
    lines.append("")
    lines.append(f"{'t s':>6}{'RSS MiB':>9}{'fds':>6}{'threads':>9}")
    stride = max(1, len(series) // 40)
    for t, rss, fds, threads in series[::stride] + ([series[-1]] if (len(series) - 1) % stride else []):
        lines.append(f"{t:>6.0f}{rss / 1024:>9.1f}{fds:>6}{threads:>9}")
    lines.append("")
    growth = end / warm - 1
    lines.append(f"RSS (median of {span:.0f} s): {warm / 1024:.1f} MiB from {warm_at:.0f} s (warm), "
                 f"{end / 1024:.1f} MiB over the last {span:.0f} s ({growth:+.1%}); peak {peak / 1024:.1f} MiB")
    if growth >= 0.10:
        failures.append(f"RSS grew {growth:.1%} after warming up (limit 10 %)")
    lines.append(f"before the load: {fds0} fds, {threads0} threads; after it, churn undone: {fds1} fds, {threads1} threads")
    if fds1 > fds0 or threads1 > threads0:
        failures.append(f"leaked: {fds1 - fds0} fds, {threads1 - threads0} threads")

    server = {"grpc": "grpc", "http-binary": "http"}
    for protocol, r in reports.items():
        errors = dict(r["errors"])
        refused = sum(v for k, v in errors.items() if k in ("http_503", "http_429", "grpc_Unavailable", "grpc_ResourceExhausted"))
        not_sent = errors.pop("client_overloaded", 0)
        failed = {k: v for k, v in errors.items() if k not in ("http_503", "http_429", "grpc_Unavailable", "grpc_ResourceExhausted")}
        sent = r["requests"] - not_sent
        counted = after_counts.get(server[protocol], 0) - before_counts.get(server[protocol], 0)
        lines.append(f"{protocol}: sent {sent}, ok {r['ok']}, refused {refused}, failed {sum(failed.values())} {json.dumps(failed) if failed else ''}"
                     f"; served {r['qps']:.0f}/s, p50 {r['latency_us']['p50'] / 1000:.2f} ms, p99 {r['latency_us']['p99'] / 1000:.2f} ms"
                     f"; the server counted {counted:.0f}")
        if failed:
            failures.append(f"{protocol}: {sum(failed.values())} admitted requests failed: {json.dumps(failed)} "
                            f"e.g. {json.dumps(r.get('error_examples', {}))[:400]}")
        if not_sent:
            failures.append(f"{protocol}: the client fell behind ({not_sent} requests not sent); lower --rate")
        if counted != sent:
            failures.append(f"{protocol}: the server counted {counted:.0f} requests, the client sent {sent}")

    statuses = {}
    for name, status, body in log:
        statuses.setdefault(name, {}).setdefault(status, 0)
        statuses[name][status] += 1
        if status is not None and status >= 500:
            failures.append(f"control call '{name}' answered {status}: {body[:200]!r}")
    lines.append("")
    lines.append("churn actions and their answers: " + "; ".join(
        f"{n}: " + ", ".join(f"{s if s is not None else 'file'}x{c}" for s, c in st.items()) for n, st in statuses.items()))
    lines.append("")
    lines += [f"FAIL: {f}" for f in failures] or ["PASS: no admitted request failed, RSS flat, no leaked fds or threads, every request counted"]
    text = "\n".join(lines)
    print(text)
    if args.out:
        open(args.out, "w").write(text + "\n")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
