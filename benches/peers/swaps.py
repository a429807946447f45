"""Version swaps for benches/peers.sh's memory row.

  swaps.py MODEL_DIR MODEL HTTP_PORT COUNT

Swaps MODEL's served version COUNT times, the way a continuous-training
pipeline does: a new version folder (a copy of the newest one) is written,
`POST /v2/repository/models/MODEL/load` loads it (the default version policy
serves the newest, so the previous one is unloaded), then the old folder is
removed. A client thread keeps sending requests to MODEL all along and checks
every answer (tiny: input * 2 + 1); a failed or wrong answer is counted, not
hidden. One JSON line on stdout: swaps done, seconds, failed loads, requests
served during the swaps and how many failed; a final request checks that the
newest version is the one answering.
"""

import http.client
import json
import os
import shutil
import sys
import threading
import time


def versions(model_dir):
    return sorted(int(d) for d in os.listdir(model_dir) if d.isdigit())


def main():
    model_dir, model, port, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    body = json.dumps({"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32",
                                   "data": [float(i) for i in range(16)]}]})
    expect = [i * 2.0 + 1.0 for i in range(16)]
    stop = threading.Event()
    served = {"ok": 0, "failed": 0, "first_failure": None}

    def client():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        while not stop.is_set():
            try:
                conn.request("POST", f"/v2/models/{model}/infer", body, {"content-type": "application/json"})
                r = conn.getresponse()
                data = r.read()
                if r.status == 200 and json.loads(data)["outputs"][0]["data"] == expect:
                    served["ok"] += 1
                    continue
                failure = f"HTTP {r.status}: {data[:200]!r}"
            except Exception as e:  # a dropped connection is a failed request too
                failure = repr(e)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            served["failed"] += 1
            served["first_failure"] = served["first_failure"] or failure

    t = threading.Thread(target=client, daemon=True)
    t.start()
    failed_loads, first_load_failure = 0, None
    began = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for _ in range(count):
        old = versions(model_dir)
        new = old[-1] + 1
        shutil.copytree(os.path.join(model_dir, str(old[-1])), os.path.join(model_dir, f".{new}.part"))
        os.rename(os.path.join(model_dir, f".{new}.part"), os.path.join(model_dir, str(new)))
        conn.request("POST", f"/v2/repository/models/{model}/load", b"", {"content-type": "application/json"})
        r = conn.getresponse()
        data = r.read()
        if r.status != 200:
            failed_loads += 1
            first_load_failure = first_load_failure or f"HTTP {r.status}: {data[:200]!r}"
            continue
        for v in old:
            shutil.rmtree(os.path.join(model_dir, str(v)))
    seconds = time.monotonic() - began
    stop.set()
    t.join()
    # The swaps took: the newest folder is the version that answers now.
    conn.request("POST", f"/v2/models/{model}/infer", body, {"content-type": "application/json"})
    answered_by = json.loads(conn.getresponse().read()).get("model_version")
    if answered_by != str(versions(model_dir)[-1]):
        failed_loads += 1
        first_load_failure = first_load_failure or f"version {answered_by} answers, not the newest {versions(model_dir)[-1]}"
    print(json.dumps({"swaps": count, "seconds": round(seconds, 2), "failed_loads": failed_loads,
                      "first_load_failure": first_load_failure, "final_version": versions(model_dir)[-1], "answered_by": answered_by,
                      "requests_during": served["ok"] + served["failed"], "failed_requests": served["failed"],
                      "first_failure": served["first_failure"]}))


if __name__ == "__main__":
    main()
