"""Issue 12's targets, checked against one or more benches/peers.sh runs.

  python3 benches/peers/targets.py target/peers/run1/results.json [run2 ...]

For every target, the figure of each run and whether it is met; a target
counts as met only when every run meets it. The ORT batch-1 latency of
`tiny` (for the c=1 p50 target) is the run's own in-process measurement
when it has one (`ort`, name tiny), else TINY_ORT_P50_US from the
environment (default 4 µs: examples/ort_ceiling on models/tiny at batch 1,
the p50 of three runs on 2026-12-03), and is printed with its source.
"""

import json
import os
import statistics
import sys


def main(paths):
    runs = [json.load(open(p)) for p in paths]
    rows = [{(r["client"], r["model"], r["protocol"], r["c"], r["server"]): r for r in run["rows"]} for run in runs]
    checks = []  # (target, [(figure text, met, figure)] per run; met None: not measured)
    missing = ("-", None, None)

    def ratio_at_least(r, need=0.95):
        if not r or r["ratio"] is None:
            return missing
        return (f"{r['ratio']:.2f}", r["ratio"] >= need, r["ratio"])

    def check(target, per_run):
        checks.append((target, per_run))

    cs = sorted({k[3] for rs in rows for k in rs})
    clients = [c for c in ["lean", "loadtest"] if any(k[0] == c for rs in rows for k in rs)]

    for client in clients:
        for proto in ["grpc", "http-binary"]:
            for c in cs:
                out = []
                for rs in rows:
                    r = rs.get((client, "tiny", proto, c, "infergate"))
                    out.append(ratio_at_least(r))
                check(f"{client:<8} tiny {proto:<11} c={c:<2} >= 0.95x bare", out)
    for proto in ["grpc", "http-binary"]:
        out = []
        for run, rs in zip(runs, rows):
            ig, bare = rs.get(("lean", "tiny", proto, 1, "infergate")), rs.get(("lean", "tiny", proto, 1, "bare"))
            ort = next((o["p50_us"] for o in run["ort"] if o["name"] == "tiny" and o["batch"] == 1), None)
            src = "run"
            if ort is None:
                ort, src = float(os.environ.get("TINY_ORT_P50_US", "4")), "env"
            if ig and bare:
                bound = bare["p50_us"] + ort + 10
                out.append((f"{ig['p50_us']:.0f}<={bound:.0f}({src})", ig["p50_us"] <= bound, ig["p50_us"]))
            else:
                out.append(missing)
        check(f"lean     tiny {proto:<11} c=1  p50 <= bare p50 + ORT b1 + 10 us", out)
    for client in clients:
        for model in ["mlp", "cnn"]:
            for proto in ["http-json", "http-binary", "grpc"]:
                for c in [c for c in cs if c >= 8]:
                    out = []
                    for rs in rows:
                        r = rs.get((client, model, proto, c, "infergate"))
                        out.append(ratio_at_least(r))
                    if any(m is not None for _, m, _ in out):
                        check(f"{client:<8} {model:<4} {proto:<11} c={c:<2} >= 0.95x compute ceiling", out)
    for client in clients:
        for proto in ["http-json", "http-binary", "grpc"]:
            for peer, need in [("triton-cache", 1.0), ("mlserver", 20.0)]:
                for c in cs:
                    out = []
                    for rs in rows:
                        ig, p = rs.get((client, "tiny", proto, c, "infergate")), rs.get((client, "tiny", proto, c, peer))
                        if ig and p and p["qps"]:
                            x = ig["qps"] / p["qps"]
                            out.append((f"x{x:.2f}", x >= need, x))
                        else:
                            out.append(missing)
                    if any(m is not None for _, m, _ in out):
                        check(f"{client:<8} tiny {proto:<11} c={c:<2} >= {need:g}x {peer}", out)

    width = max(len(t) for t, _ in checks)
    print(f"{'target':<{width}}  " + "  ".join(f"run{i + 1:<10}" for i in range(len(runs))) + "  median   verdict")
    met_all = 0
    for target, out in checks:
        known = [m for _, m, _ in out if m is not None]
        verdict = "met" if known and all(known) else (f"met in {known.count(True)} of {len(known)}" if known else "n/a")
        met_all += verdict == "met"
        figures = [v for _, m, v in out if m is not None]
        median = f"{statistics.median(figures):.2f}" if figures else "-"
        print(f"{target:<{width}}  " + "  ".join(f"{f + ('' if m else ' x') if m is not None else f:<13}" for f, m, _ in out)
              + f"  {median:<8} {verdict}")
    print(f"\n{met_all} of {len(checks)} targets met in every run (x: missed in that run)")
    print("\nmemory, RSS MiB (server process / with its children)")
    for i, run in enumerate(runs):
        mem = ", ".join(f"{m['server']} {m['when']} {m['rss_kib'] / 1024:.0f}/{m['tree_rss_kib'] / 1024:.0f}" for m in run["memory"])
        print(f"  run{i + 1}: {mem}")
        for w in run.get("swaps", []):
            print(f"        {w['swaps']} swaps in {w['seconds']} s, {w['failed_loads']} failed loads, "
                  f"{w['failed_requests']} of {w['requests_during']} requests failed, answered by version {w.get('answered_by')}")
    print("failed requests: " + ", ".join(str(run["failed_requests"]) for run in runs)
          + "; server crashes: " + ", ".join(str(len(run["server_crashes"])) for run in runs))


if __name__ == "__main__":
    main(sys.argv[1:])
