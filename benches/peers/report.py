"""Result handling of benches/peers.sh.

  report.py run wrk|h2load|loadtest WORK FILE [LOG] key=value...
      One measured run as a JSON line (qps, p50/p99 µs, errors) plus the
      key=value fields (client, server, model, protocol, c, round, ...).
        wrk:      FILE is wrk's output, ending with wrk_post.lua's JSON line.
        h2load:   FILE is h2load's output, LOG its --log-file (per request:
                  start µs, HTTP status, µs to the end of the response).
                  h2load counts a gRPC error (HTTP 200, grpc-status in the
                  trailers, no message) as a success, so the DATA bytes it
                  received are checked against the response size that
                  verify.py saw: every missing message is counted as an error.
        loadtest: FILE is loadtest --json's report.
  report.py rss PID
      VmRSS of PID and of PID with all its descendants (Triton's Python
      backend stubs, MLServer's workers), KiB, as a JSON line.
  report.py table WORK OUT MARKDOWN
      The table on stdout, everything in OUT (JSON), the README tables in
      MARKDOWN.
  report.py merge OUT MARKDOWN RESULTS.json...
      Several runs' results as one table: each row the median of every
      run's rounds (what the README shows: one 3 s round per row is noisy
      on a shared machine).
"""

import datetime
import glob
import json
import os
import platform
import re
import statistics
import sys

SERVERS = ["bare", "infergate", "triton", "triton-cache", "mlserver"]


def fields(args):
    out = {}
    for a in args:
        k, v = a.split("=", 1)
        out[k] = int(v) if v.isdigit() else v
    return out


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def run_wrk(work, path):
    lines = [l for l in open(path) if l.startswith("{")]
    if not lines:
        return {"qps": 0.0, "p50_us": None, "p99_us": None, "requests": 0, "errors": 1, "error_detail": "no wrk summary"}
    r = json.loads(lines[-1])
    e = r["errors"]
    errors = e["connect"] + e["read"] + e["write"] + e["status"] + e["timeout"]
    ok = r["requests"] - e["status"]
    return {
        "qps": ok / (r["duration_us"] / 1e6),
        "p50_us": r["latency_us"]["p50"],
        "p99_us": r["latency_us"]["p99"],
        "requests": r["requests"],
        "errors": errors,
        "error_detail": {k: v for k, v in e.items() if v},
    }


def response_bytes(work, server, model, protocol):
    for line in open(f"{work}/verify.jsonl"):
        v = json.loads(line)
        if v["server"] == server and v["payload"] == model and v["protocol"] == protocol:
            return v["response_bytes"]
    return None


def run_h2load(work, path, log, meta):
    text = open(path).read()
    m = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", text)
    data = re.search(r"traffic: .*?, .*? \((\d+)\) data", text)
    if not m or not data:
        return {"qps": 0.0, "p50_us": None, "p99_us": None, "requests": 0, "errors": 1, "error_detail": "no h2load summary"}
    total, done, succeeded, failed, errored, timeout = map(int, m.groups())
    starts, ends, times, non2xx = [], [], [], 0
    for line in open(log):
        start, status, us = line.split()
        starts.append(int(start))
        ends.append(int(start) + int(us))
        times.append(int(us))
        non2xx += not status.startswith("2")
    times.sort()
    # Responses to identical requests are all the same size: each one that
    # is missing from the DATA total was a gRPC error (trailers only).
    want = response_bytes(work, meta["served_as"], meta["payload"], "grpc")
    got = int(data.group(1))
    missing = max(0, succeeded - got // want) if want else 0
    ok = succeeded - non2xx - missing
    seconds = (max(ends) - min(starts)) / 1e6 if starts else 1
    return {
        "qps": ok / seconds,
        "p50_us": percentile(times, 0.50),
        "p99_us": percentile(times, 0.99),
        "requests": total,
        "errors": total - ok,
        "error_detail": {k: v for k, v in dict(failed=failed, errored=errored, timeout=timeout, non2xx=non2xx, grpc_errors=missing).items() if v},
        "response_bytes": want,
        "data_bytes": got,
    }


def run_loadtest(work, path):
    try:
        r = json.load(open(path))
    except (OSError, ValueError):
        return {"qps": 0.0, "p50_us": None, "p99_us": None, "requests": 0, "errors": 1, "error_detail": "no loadtest report"}
    errors = sum(r["errors"].values())
    return {
        "qps": r["qps"],
        "p50_us": r["latency_us"]["p50"],
        "p99_us": r["latency_us"]["p99"],
        "requests": r["requests"],
        "errors": errors,
        "error_detail": {k: v for k, v in r["errors"].items() if v},
        "error_examples": r.get("error_examples") or {},
    }


def rss(pid):
    def vmrss(p):
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            pass
        return 0

    children = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            s = open(stat).read()
        except OSError:
            continue
        p, ppid = int(stat.split("/")[2]), int(s[s.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(p)
    tree, todo = [], [int(pid)]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo += children.get(p, [])
    return {"pid": int(pid), "rss_kib": vmrss(pid), "tree_rss_kib": sum(vmrss(p) for p in tree), "processes": len(tree)}


def fmt(v, width, digits=0):
    if v is None:
        return f"{'-':>{width}}"
    return f"{v:>{width}.{digits}f}"


def si(v):
    if v is None:
        return "-"
    return f"{v / 1000:.1f}k" if v >= 10000 else f"{v:.0f}"


def table(work, out, markdown):
    runs = [json.loads(l) for f in sorted(glob.glob(f"{work}/runs/*.json")) for l in open(f)]
    ort = [json.loads(l) for l in open(f"{work}/ort.jsonl")] if os.path.exists(f"{work}/ort.jsonl") else []
    mem = [json.loads(l) for l in open(f"{work}/rss.jsonl")] if os.path.exists(f"{work}/rss.jsonl") else []
    crashes = [json.loads(l) for l in open(f"{work}/crashes.jsonl")] if os.path.exists(f"{work}/crashes.jsonl") else []
    swaps = [json.loads(l) for l in open(f"{work}/swaps.jsonl")] if os.path.exists(f"{work}/swaps.jsonl") else []
    verified = [json.loads(l) for l in open(f"{work}/verify.jsonl")] if os.path.exists(f"{work}/verify.jsonl") else []
    settings = json.load(open(f"{work}/settings.json"))

    groups = {}
    for r in runs:
        groups.setdefault((r["client"], r["model"], r["protocol"], r["c"], r["server"]), []).append(r)
    agg = {}
    for key, rs in groups.items():
        med = lambda f: statistics.median(r[f] for r in rs) if all(r[f] is not None for r in rs) else None
        agg[key] = {"qps": med("qps"), "p50_us": med("p50_us"), "p99_us": med("p99_us"),
                    "errors": sum(r["errors"] for r in rs), "rounds": len(rs),
                    "qps_rounds": [round(r["qps"], 1) for r in rs], "server_died": any(r.get("server_died") for r in rs)}

    ort_best = {}
    for model in {o["name"] for o in ort}:
        best = max((o for o in ort if o["name"] == model), key=lambda o: o["rows_per_s"])
        ort_best[model] = best

    def reference(client, model, protocol, c):
        """(what the ratio is against, its qps)"""
        bare = agg.get((client, model, protocol, c, "bare"))
        if bare is None or not bare["qps"]:
            return None, None
        if model == "tiny":
            return "bare", bare["qps"]
        if model not in ort_best:
            return None, None
        return "ceiling", 1 / (1 / bare["qps"] + 1 / ort_best[model]["rows_per_s"])

    rows = []
    order = lambda k: (["lean", "loadtest"].index(k[0]), ["tiny", "mlp", "cnn"].index(k[1]),
                       ["http-json", "http-binary", "grpc"].index(k[2]), k[3], SERVERS.index(k[4]))
    for key in sorted(agg, key=order):
        client, model, protocol, c, server = key
        a = agg[key]
        against, ref = reference(client, model, protocol, c)
        row = {"client": client, "tool": {"http-json": "wrk", "http-binary": "wrk", "grpc": "h2load"}[protocol] if client == "lean" else "loadtest",
               "model": model, "protocol": protocol, "c": c, "server": server, **a,
               "ratio": a["qps"] / ref if ref and a["qps"] is not None else None,
               "ratio_vs": against, "reference_qps": ref}
        if server == "bare" and model != "tiny":
            row["ratio"], row["ratio_vs"] = None, None  # the ceiling's own input
            row["note"] = f"bare carrying {model}-sized requests"
        rows.append(row)

    # infergate against each peer, same client/model/protocol/c.
    versus = []
    for r in rows:
        if r["server"] != "infergate":
            continue
        for peer in ["triton", "triton-cache", "mlserver"]:
            p = agg.get((r["client"], r["model"], r["protocol"], r["c"], peer))
            if p and p["qps"]:
                versus.append({"client": r["client"], "model": r["model"], "protocol": r["protocol"], "c": r["c"], "peer": peer,
                               "qps_ratio": r["qps"] / p["qps"],
                               "p50_ratio": p["p50_us"] / r["p50_us"] if r["p50_us"] and p["p50_us"] else None})

    # --- stdout
    print(f"\n{'client':<9}{'model':<6}{'protocol':<13}{'c':>3}  {'server':<13}{'qps':>9}{'p50 us':>9}{'p99 us':>9}{'ratio':>8}  vs")
    last = None
    for r in rows:
        head = (r["client"], r["model"], r["protocol"], r["c"])
        if last and head[:3] != last[:3]:
            print()
        last = head
        flag = ""
        if r["errors"]:
            flag += f"  ! {r['errors']} failed"
        if r["server_died"]:
            flag += "  ! server died, restarted"
        vs = r["ratio_vs"] or ("(ceiling input)" if r.get("note") else "")
        if r["ratio_vs"] == "ceiling":
            vs = f"ceiling {r['reference_qps']:.0f}"
        print(f"{r['client']:<9}{r['model']:<6}{r['protocol']:<13}{r['c']:>3}  {r['server']:<13}{fmt(r['qps'], 9)}{fmt(r['p50_us'], 9)}{fmt(r['p99_us'], 9)}{fmt(r['ratio'], 8, 3)}  {vs}{flag}")
    na = [f"{s} {p}" for s, p in settings.get("not_applicable", [])]
    if na:
        print(f"\nn/a (not measured): {', '.join(na)}")
    if versus:
        print(f"\ninfergate vs peers (qps ratio infergate/peer; p50 ratio peer/infergate, > 1: infergate faster)")
        for v in versus:
            print(f"  {v['client']:<9}{v['model']:<6}{v['protocol']:<13}c={v['c']:<3} vs {v['peer']:<13} qps x{v['qps_ratio']:.2f}  p50 x{fmt(v['p50_ratio'], 0, 2).strip()}")
    if ort_best:
        print("\nONNX Runtime in-process, one thread, best batch: " + ", ".join(
            f"{m} {b['rows_per_s']:.0f} rows/s (batch {b['batch']})" for m, b in sorted(ort_best.items())))
    if mem:
        print("\nmemory, RSS MiB (server process / with its child processes)")
        for m in mem:
            print(f"  {m['server']:<10}{m['when']:<14}{m['rss_kib'] / 1024:>8.1f} / {m['tree_rss_kib'] / 1024:>8.1f}  ({m['processes']} processes)")
    for w in swaps:
        print(f"  infergate: {w['swaps']} version swaps of tiny in {w['seconds']} s, {w['failed_loads']} failed loads; "
              f"{w['requests_during']} requests during them, {w['failed_requests']} failed"
              + (f" (first: {w['first_failure']})" if w["first_failure"] else "")
              + (f"; first failed load: {w['first_load_failure']}" if w["first_load_failure"] else ""))
    for c in crashes:
        print(f"!! {c['server']} (pid {c['pid']}) died during {c['during']}; restarted as pid {c.get('restarted_pid')}")
    total_errors = sum(r["errors"] for r in rows)
    print(f"\nfailed requests across all runs: {total_errors}")

    # --- markdown
    md = []
    present = [s for s in SERVERS if any(r["server"] == s for r in rows)]
    for client in ["lean", "loadtest"]:
        crow = [r for r in rows if r["client"] == client]
        if not crow:
            continue
        tools = "wrk (HTTP) / h2load (gRPC)" if client == "lean" else "infergate's loadtest"
        md.append(f"### {tools}: requests/s (ratio)\n")
        md.append("Ratio: tiny against `bare`; mlp and cnn against the compute ceiling 1/(1/bare + 1/ORT best), bare carrying requests of the model's size.\n")
        md.append("| model | protocol | c | " + " | ".join(present) + " |")
        md.append("|---|---|--:|" + "--:|" * len(present))
        # One row per model/protocol/c, in the same order in both tables.
        keys = sorted({(r["model"], r["protocol"], r["c"]) for r in crow}, key=lambda k: (["tiny", "mlp", "cnn"].index(k[0]), ["http-json", "http-binary", "grpc"].index(k[1]), k[2]))
        cell_of = {(r["model"], r["protocol"], r["c"], r["server"]): r for r in crow}
        for key in keys:
            cells = []
            for s in present:
                r = cell_of.get((*key, s))
                if r is None:
                    cells.append("n/a" if [s, key[1]] in settings.get("not_applicable", []) else "")
                else:
                    cell = si(r["qps"]) + (f" ({r['ratio']:.2f})" if r["ratio"] is not None else "")
                    if r["errors"]:
                        cell += " !"
                    cells.append(cell)
            md.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
        md.append("")
        md.append(f"### {tools}: latency p50 / p99, µs\n")
        md.append("| model | protocol | c | " + " | ".join(present) + " |")
        md.append("|---|---|--:|" + "--:|" * len(present))
        for key in keys:
            cells = []
            for s in present:
                r = cell_of.get((*key, s))
                cells.append(f"{si(r['p50_us'])} / {si(r['p99_us'])}" if r else ("n/a" if [s, key[1]] in settings.get("not_applicable", []) else ""))
            md.append(f"| {key[0]} | {key[1]} | {key[2]} | " + " | ".join(cells) + " |")
        md.append("")
    if mem:
        md.append("### Memory (RSS, MiB: server process / with child processes)\n")
        swapped = [f"after-{w['swaps']}-swaps" for w in swaps[:1]]
        md.append("| server | after loading | after the run |" + "".join(f" after {w['swaps']} version swaps |" for w in swaps[:1]))
        md.append("|---|--:|--:|" + "--:|" * len(swapped))
        for s in sorted({m["server"] for m in mem}, key=lambda s: SERVERS.index(s) if s in SERVERS else 99):
            cell = lambda when: next((f"{m['rss_kib'] / 1024:.0f} / {m['tree_rss_kib'] / 1024:.0f}" for m in mem if m["server"] == s and m["when"] == when), "")
            md.append(f"| {s} | {cell('after-loading')} | {cell('after-run')} |" + "".join(f" {cell(w)} |" for w in swapped))
        md.append("")
        for w in swaps:
            md.append(f"infergate's {w['swaps']} swaps of `tiny` (new version folder, `POST /v2/repository/models/tiny/load`, old folder removed) "
                      f"took {w['seconds']} s with {w['failed_loads']} failed loads; a client sending requests all along had "
                      f"{w['failed_requests']} of {w['requests_during']} fail.\n")
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    md.append(f"{datetime.date.today().isoformat()}, {cpu}, {os.cpu_count()} cores; servers on core {settings['SERVER_CPU']}, "
              f"clients on core {settings['CLIENT_CPU']}; {settings['ROUNDS']} rounds of {settings['DURATION']} per row (median); "
              f"`{settings['command']}`.")
    open(markdown, "w").write("\n".join(md) + "\n")

    json.dump({
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cores": os.cpu_count(), "cpu_model": cpu, "kernel": platform.release(), "arch": platform.machine()},
        "command": settings["command"],
        "settings": settings,
        "rows": rows,
        "infergate_vs_peers": versus,
        "ort": ort,
        "ort_best": ort_best,
        "memory": mem,
        "server_crashes": crashes,
        "swaps": swaps,
        "verification": verified,
        "runs": runs,
        "failed_requests": total_errors,
    }, open(out, "w"), indent=1)
    print(f"details in {out}; README tables in {markdown}")


def merge(out, markdown, results):
    """Several runs' results.json as one: every run's rounds in one table
    (the median of all of them per row); ONNX Runtime, memory and swaps from
    the last run, whose settings are kept with ROUNDS the total."""
    import tempfile
    loaded = [json.load(open(p)) for p in results]
    with tempfile.TemporaryDirectory() as work:
        os.makedirs(f"{work}/runs")
        rounds = 0
        for i, res in enumerate(loaded):
            with open(f"{work}/runs/run{i}.json", "w") as f:
                for r in res["runs"]:
                    f.write(json.dumps({**r, "round": rounds + r["round"]}) + "\n")
            rounds += res["settings"]["ROUNDS"]
        last = loaded[-1]
        for name, rows in [("ort", last["ort"]), ("rss", last["memory"]), ("swaps", last.get("swaps", [])),
                           ("crashes", [c for res in loaded for c in res["server_crashes"]]),
                           ("verify", last["verification"])]:
            with open(f"{work}/{name}.jsonl", "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
        settings = dict(last["settings"])
        settings["ROUNDS"] = rounds
        settings["command"] = f"{len(loaded)} runs of " + last["settings"]["command"].strip()
        json.dump(settings, open(f"{work}/settings.json", "w"))
        table(work, out, markdown)


def main():
    cmd = sys.argv[1:2]
    if cmd == ["run"]:
        kind, work, path = sys.argv[2:5]
        rest = sys.argv[5:]
        log = None
        if kind == "h2load":
            log, rest = rest[0], rest[1:]
        meta = fields(rest)
        if kind == "wrk":
            r = run_wrk(work, path)
        elif kind == "h2load":
            r = run_h2load(work, path, log, meta)
        else:
            r = run_loadtest(work, path)
        print(json.dumps({**meta, **r}))
    elif cmd == ["rss"]:
        print(json.dumps(rss(sys.argv[2])))
    elif cmd == ["table"]:
        table(*sys.argv[2:5])
    elif cmd == ["merge"]:
        merge(sys.argv[2], sys.argv[3], sys.argv[4:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
