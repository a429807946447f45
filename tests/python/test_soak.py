"""The soak, short (issue 14 §6): benches/soak.sh for 60 s against the
binary under test, open-loop load over gRPC and HTTP while versions come and
go, a broken one is dropped in, promote / rollback / shadow / load / unload
are called. It passes only if no admitted request failed, RSS stayed flat
after warming up, threads and file descriptors came back to what they were,
and the server counted every request sent. The 10-minute run is a benchmark
(README, "Safe in front of real traffic")."""

from __future__ import annotations

import os
import subprocess

from conftest import REPO_ROOT, _binary


def test_soak_60s(tmp_path):
    loadtest = REPO_ROOT / "target" / "debug" / "loadtest"
    assert loadtest.is_file(), f"{loadtest} missing: cargo test --workspace --no-run builds it"
    out = tmp_path / "soak.txt"
    env = dict(os.environ, DURATION="60", RATE="150", STEP="2", OUT=str(out),
               IG_BIN=str(_binary()), LOADTEST_BIN=str(loadtest))
    run = subprocess.run(["bash", "benches/soak.sh"], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=240)
    report = out.read_text() if out.exists() else ""
    assert run.returncode == 0, f"soak failed:\n{report}\n{run.stdout[-3000:]}\n{run.stderr[-5000:]}"
    assert "PASS" in report
    # Every kind of churn ran at least once in 60 s (30 actions, 10 kinds).
    for action in ("add version 3", "broken version 4", "promote 1", "rollback",
                   "start shadow 2", "stop shadow", "unload tiny", "load tiny", "reload digits"):
        assert action in report, f"'{action}' never ran:\n{report}"
