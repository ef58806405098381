"""The multi-host simulation's parts (benchmarks/multihost.py): a network namespace on the bridge
reaches Redis only through the delay proxy, and each request pays the proxy's round trip and is
counted. Needs root (namespaces, a bridge): skipped elsewhere."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import multihost
from tests.backends import REDIS_URL

pytestmark = pytest.mark.e2e

RTT_MS = 20.0
PINGS = 10
PORT = 16399  # not the benchmark's own, so the two never meet


def test_a_namespace_reaches_redis_through_the_delay_proxy(tmp_path: Path) -> None:
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("network namespaces need root and iproute2")
    if not REDIS_URL:
        pytest.skip("CALIB_TEST_REDIS_URL is not set")
    stats = tmp_path / "stats.json"
    with multihost.network(["probe"]) as addresses:
        proxy = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.delay_proxy", "--listen", f"{multihost.HOST}:{PORT}"]
            + ["--to", "127.0.0.1:6379", "--rtt-ms", str(RTT_MS), "--stats", str(stats)],
        )
        try:
            time.sleep(1.0)
            # From inside the namespace: PINGs over one connection, timed there.
            script = (
                f"import redis, time; r = redis.Redis(host={multihost.HOST!r}, port={PORT}); r.ping();"
                f"t = time.perf_counter(); [r.ping() for _ in range({PINGS})];"
                f"print((time.perf_counter() - t) / {PINGS} * 1000)"
            )
            out = subprocess.run(
                ["ip", "netns", "exec", "calib-probe", sys.executable, "-c", script],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            )
            per_ping_ms = float(out.stdout.strip())
            # The namespace has no other way out: the host's loopback Redis is not its loopback.
            direct = subprocess.run(
                ["ip", "netns", "exec", "calib-probe", "redis-cli", "-h", "127.0.0.1", "-p", "6379", "ping"],
                capture_output=True,
                text=True,
                timeout=10,
            )
            time.sleep(0.6)
            counts = json.loads(stats.read_text())
        finally:
            proxy.terminate()
            proxy.wait(10)
    assert addresses["probe"].startswith(multihost.NET)
    assert RTT_MS <= per_ping_ms < RTT_MS + 30, per_ping_ms
    assert "PONG" not in direct.stdout
    # Every request is a write of the client's: the PINGs, and the two CLIENT SETINFO redis-py
    # sends as it connects.
    assert counts["connections"] == 1 and counts["client_writes"] == PINGS + 1 + 2
