"""Past one machine, simulated on one: `python -m benchmarks.multihost` (root; Linux network
namespaces, veth, a bridge and cgroup v1 CPU quotas).

The hosts: the API (gunicorn) in a network namespace of its own, and each Celery worker in one of
its own, every namespace joined to a bridge by a veth pair; PostgreSQL and Redis stay on this host,
reachable from the namespaces only through benchmarks/delay_proxy.py on the bridge, which adds the
round trip asked for (`--rtt-ms`; this kernel has no netem). Each worker runs under a CPU quota
(`--worker-cpu`, default a quarter of a core) and the API under one core, so four workers do not
simply share the same two cores more thinly: a worker is a small host.

For each round trip and each count of worker namespaces, on a fresh database:
- the batch: `--batch` thermometer fits (5000 epochs, every loss kept) from POST to completed;
- single fits: `--clients` clients each submitting the seed fit and waiting for it (`?wait=`), for
  `--seconds`; completed fits per second;
- E(N) = X(N) / (N · X(1)) for both, X being fits per second; for the batch also E(N) of the
  time after the POST's answer (the POST is one request in front of every worker);
- round trips: the database's (client writes through the proxy: a request is one write) and
  Redis's (commands, from INFO commandstats), per chunk and per single fit;
- the workers' CPU seconds for the batch (user + system of the processes in their cgroups): under
  a quarter core a worker's wall time is about four times its CPU, so this tells a change in the
  workers' code from the machine's noise; and the API's, PostgreSQL's and the delay proxies' for
  the batch: the hosts share this machine's cores, and with four workers these can be the wall.
Prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import redis
import sqlalchemy as sa

from benchmarks.databases import fresh_postgres
from benchmarks.load import Tally, client
from benchmarks.service import batch_body
from migrations.apply import upgrade
from services.cli import processes
from shared.runtime.settings import Settings
from shared.store import tokens
from shared.store.db import Database
from tests.stack import cpu_by_part, cpu_of, proc_stat

BRIDGE, NET = "calibbr0", "10.77.0"
HOST = f"{NET}.1"  # this host on the bridge: the proxies listen here
API_IP = f"{NET}.10"
PG_PORT, REDIS_PORT = 15432, 16379
REDIS_DB = 10
CGROUP = Path("/sys/fs/cgroup/cpu")
PERIOD_US = 100_000


def sh(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


@contextlib.contextmanager
def network(hosts: list[str]) -> Iterator[dict[str, str]]:
    """A bridge with this host on it, and a namespace per host joined to it: name → its address."""
    addresses: dict[str, str] = {}
    sh("ip", "link", "add", BRIDGE, "type", "bridge")
    try:
        sh("ip", "addr", "add", f"{HOST}/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        for i, name in enumerate(hosts):
            ns, outside, inside = f"calib-{name}", f"cv{i}", f"cvp{i}"
            address = API_IP if name == "api" else f"{NET}.{20 + i}"
            sh("ip", "netns", "add", ns)
            sh("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
            sh("ip", "link", "set", inside, "netns", ns)
            sh("ip", "link", "set", outside, "master", BRIDGE)
            sh("ip", "link", "set", outside, "up")
            sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{address}/24", "dev", inside)
            sh("ip", "netns", "exec", ns, "ip", "link", "set", inside, "up")
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
            addresses[name] = address
        yield addresses
    finally:
        for i, name in enumerate(hosts):
            subprocess.run(["ip", "link", "del", f"cv{i}"], capture_output=True)
            subprocess.run(["ip", "netns", "del", f"calib-{name}"], capture_output=True)
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)


def cpu_quota(name: str, cores: float) -> Path:
    group = CGROUP / f"calib-{name}"
    group.mkdir(exist_ok=True)
    (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
    (group / "cpu.cfs_quota_us").write_text(str(int(cores * PERIOD_US)))
    return group


def cpu_seconds(names: list[str]) -> float:
    """CPU seconds (user + system) of every process now in these hosts' cgroups."""
    total = 0.0
    for name in names:
        with contextlib.suppress(OSError):
            for pid in (CGROUP / f"calib-{name}" / "cgroup.procs").read_text().split():
                with contextlib.suppress(OSError):
                    total += cpu_of(proc_stat(pid)[1])
    return total


def shared_cpu_seconds(proxies: list[int]) -> dict[str, float]:
    """CPU seconds so far of what every simulated host shares on this machine: PostgreSQL's
    processes (the cluster's, every backend) and the delay proxies. Under four workers these,
    not the workers' quotas, can be what the batch waits for."""

    def part_of(pid: int, name: str) -> str | None:
        return "proxies" if pid in proxies else "postgres" if name.startswith("postgres") else None

    return cpu_by_part(part_of, ("postgres", "proxies"))


class Hosts:
    """The processes of one simulated deployment, started in their namespaces under their quotas."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs = env, logs
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, command: list[str], cores: float) -> None:
        group = cpu_quota(name, cores)
        # Into the cgroup first, then into the namespace, then the program: every process it forks
        # (gunicorn's and Celery's children) inherits both.
        inner = " ".join(processes.resolve(command))
        script = f"echo $$ > {group}/cgroup.procs && exec ip netns exec calib-{name} {inner}"
        with (self.logs / f"{name}.log").open("ab") as log:
            self.children[name] = subprocess.Popen(
                ["sh", "-c", script], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def stop(self, name: str) -> None:
        child = self.children.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        group = CGROUP / f"calib-{name}"
        for _ in range(50):  # the group empties once every process in it has exited
            with contextlib.suppress(OSError):
                group.rmdir()
                break
            time.sleep(0.1)

    def stop_all(self) -> None:
        for name in list(self.children):
            self.stop(name)


def wait_ready(url: str, logs: Path, names: list[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200 and all(
                " ready." in (logs / f"{name}.log").read_text(errors="replace") for name in names
            ):
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"not ready in {timeout} s: see {logs}")


def proxy_stats(path: Path) -> dict[str, int]:
    time.sleep(0.6)  # the proxy writes its counts every half second
    return dict(json.loads(path.read_text())) if path.exists() else {}


def redis_commands(url: str) -> int:
    stats = redis.Redis.from_url(url).info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def chunks_run(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        float(line.split()[-1]) for line in text.splitlines() if line.startswith("calib_chunk_duration_seconds_count")
    )


async def single_fits(url: str, tokens_: list[str], seconds: float) -> float:
    tallies = [Tally() for _ in tokens_]
    until = time.monotonic() + seconds
    await asyncio.gather(
        *(client(url, token, until, tally, "wait") for token, tally in zip(tokens_, tallies, strict=True))
    )
    return sum(t.completed for t in tallies) / seconds


def one_setting(rtt_ms: float, workers: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    logs = tmp / f"logs-{rtt_ms}-{workers}"
    logs.mkdir(parents=True)
    names = ["api"] + [f"w{i}" for i in range(1, workers + 1)]
    broker_direct = f"redis://127.0.0.1:6379/{REDIS_DB}"
    redis.Redis.from_url(broker_direct).flushdb()
    with contextlib.ExitStack() as cleanup:
        direct = cleanup.enter_context(fresh_postgres(f"calib_multihost_{workers}"))
        settings = Settings(data_dir=tmp / "data", database_url=direct, broker_url=broker_direct)
        upgrade(settings)
        db = Database.from_settings(settings)
        token_list = [tokens.create(db, f"t{i}").token for i in range(args.clients + 1)]
        db.dispose()
        proxied_db = sa.make_url(direct).set(host=HOST, port=PG_PORT).render_as_string(hide_password=False)
        stats = {"pg": tmp / f"pg-{rtt_ms}-{workers}.json", "redis": tmp / f"redis-{rtt_ms}-{workers}.json"}
        env = {
            **os.environ,
            "CALIB_DATA_DIR": str(tmp / "data"),
            "CALIB_DATABASE_URL": proxied_db,
            "CALIB_BROKER_URL": f"redis://{HOST}:{REDIS_PORT}/{REDIS_DB}",
            "CALIB_RATE_LIMIT": "100000/second",
            "CALIB_TORCH_THREADS": "1",
        } | ({"CALIB_CHUNK_SIZE": str(args.chunk_size)} if args.chunk_size else {})
        # Everything started in the namespaces stops before they go (the inner ExitStack).
        with network(names) as addresses, contextlib.ExitStack() as running:
            # On the bridge's address, which exists from here on.
            proxies = [
                subprocess.Popen(
                    [sys.executable, "-m", "benchmarks.delay_proxy", "--listen", f"{HOST}:{port}", "--to", target]
                    + ["--rtt-ms", str(rtt_ms), "--stats", str(stats[kind])],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for kind, port, target in (("pg", PG_PORT, "127.0.0.1:5432"), ("redis", REDIS_PORT, "127.0.0.1:6379"))
            ]
            for proxy in proxies:
                running.callback(proxy.wait, 10)
                running.callback(proxy.terminate)
            time.sleep(0.5)  # the proxies listen
            proxy_pids = [proxy.pid for proxy in proxies]

            def cpu_now() -> dict[str, float]:
                """CPU seconds so far of the workers' and the API's hosts, PostgreSQL and the proxies."""
                hosts_cpu = {"workers": cpu_seconds(names[1:]), "api": cpu_seconds(["api"])}
                return hosts_cpu | shared_cpu_seconds(proxy_pids)

            hosts = Hosts(env, logs)
            running.callback(hosts.stop_all)
            hosts.start("api", processes.api_command(bind=f"{addresses['api']}:8000"), 1.0)
            for name in names[1:]:
                hosts.start(name, processes.worker_command(), args.worker_cpu)
            url = f"http://{addresses['api']}:8000"
            wait_ready(url, logs, names[1:])
            headers = {"Authorization": f"Bearer {token_list[0]}"}
            with httpx.Client(base_url=url, headers=headers, timeout=120) as http:
                # Warm-up: every worker imports torch and opens its pools on a fit of its own.
                warm = batch_body(1)["fits"][0] | {"epochs": 10}
                for _ in range(2 * workers):
                    fit_id = http.post("/v1/fits", json=warm).json()["id"]
                    http.get(f"/v1/fits/{fit_id}", params={"wait": 30})
                before = (proxy_stats(stats["pg"]), redis_commands(broker_direct), chunks_run(url))
                cpu_before = cpu_now()
                started = time.perf_counter()
                r = http.post("/v1/batches", json=batch_body(args.batch))
                r.raise_for_status()
                accepted_s = time.perf_counter() - started
                batch = r.json()
                while batch["status"] not in ("completed", "cancelled"):
                    batch = http.get(f"/v1/batches/{batch['id']}", params={"wait": 60}).json()
                batch_s = time.perf_counter() - started
                assert batch["counts"]["succeeded"] == args.batch, batch
                after_batch = (proxy_stats(stats["pg"]), redis_commands(broker_direct), chunks_run(url))
                cpu_used = {part: seconds - cpu_before[part] for part, seconds in cpu_now().items()}
            fits_per_s = asyncio.run(single_fits(url, token_list[1:], args.seconds))
            after_load = (proxy_stats(stats["pg"]), redis_commands(broker_direct), chunks_run(url))
            singles = max(fits_per_s * args.seconds, 1.0)
            batch_chunks = max(after_batch[2] - before[2], 1.0)
            return {
                "rtt_ms": rtt_ms,
                "workers": workers,
                "batch_s": batch_s,
                "batch_accepted_s": accepted_s,
                "batch_fits_per_s": args.batch / batch_s,
                "single_fits_per_s": fits_per_s,
                "batch_chunks": after_batch[2] - before[2],
                "worker_cpu_s_per_batch": cpu_used["workers"],
                "api_cpu_s_per_batch": cpu_used["api"],
                "postgres_cpu_s_per_batch": cpu_used["postgres"],
                "proxies_cpu_s_per_batch": cpu_used["proxies"],
                "db_round_trips_per_batch_chunk": (after_batch[0]["client_writes"] - before[0]["client_writes"])
                / batch_chunks,
                "redis_commands_per_batch_chunk": (after_batch[1] - before[1]) / batch_chunks,
                "db_round_trips_per_single_fit": (after_load[0]["client_writes"] - after_batch[0]["client_writes"])
                / singles,
                "redis_commands_per_single_fit": (after_load[1] - after_batch[1]) / singles,
                "chunks_per_single_fit": (after_load[2] - after_batch[2]) / singles,
            }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--rtt-ms", type=float, nargs="+", default=[0.0, 2.0])
    parser.add_argument("--batch", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--worker-cpu", type=float, default=0.25, help="each worker's CPU quota, in cores")
    parser.add_argument(
        "--chunk-size",
        type=int,
        default=0,
        help="CALIB_CHUNK_SIZE (0: the default, 2048: a 10,000-fit batch is 5 chunks)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0 or not shutil.which("ip") or not CGROUP.exists():
        raise SystemExit("benchmarks.multihost needs root, iproute2 and cgroup v1's cpu controller")
    rows = []
    with contextlib.nullcontext(tempfile.mkdtemp(prefix="calib-multihost-")) as tmp:
        print(f"logs under {tmp}", flush=True)
        for rtt in args.rtt_ms:
            for workers in args.workers:
                rows.append(one_setting(rtt, workers, args, Path(tmp)))
                print(json.dumps(rows[-1]), flush=True)
    for rtt in args.rtt_ms:
        base = next(r for r in rows if r["rtt_ms"] == rtt and r["workers"] == min(args.workers))
        for row in (r for r in rows if r["rtt_ms"] == rtt):
            scale = row["workers"] / base["workers"]
            row["E_batch"] = row["batch_fits_per_s"] / (scale * base["batch_fits_per_s"])
            # The same for the part after the POST's answer: the API's POST is one request, in
            # front of every worker, whatever their number.
            row["E_batch_run"] = (base["batch_s"] - base["batch_accepted_s"]) / (
                scale * (row["batch_s"] - row["batch_accepted_s"])
            )
            row["E_single"] = row["single_fits_per_s"] / (scale * base["single_fits_per_s"])
    columns = ["RTT", "workers", "batch s", "of which POST s", "batch E(N)", "E(N) after the POST", "workers' CPU s"]
    columns += ["API / PostgreSQL / proxies' CPU s"]
    columns += ["single fits/s", "single E(N)"]
    columns += ["DB trips / batch chunk", "DB trips / single fit", "Redis cmds / single fit"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for r in rows:
        print(
            f"| {r['rtt_ms']:g} ms | {r['workers']} | {r['batch_s']:.2f} | {r['batch_accepted_s']:.2f} | "
            f"{r['E_batch']:.2f} | {r['E_batch_run']:.2f} | {r['worker_cpu_s_per_batch']:.2f} | "
            f"{r['api_cpu_s_per_batch']:.2f} / {r['postgres_cpu_s_per_batch']:.2f} / "
            f"{r['proxies_cpu_s_per_batch']:.2f} | "
            f"{r['single_fits_per_s']:.1f} | {r['E_single']:.2f} | {r['db_round_trips_per_batch_chunk']:.1f} | "
            f"{r['db_round_trips_per_single_fit']:.1f} | {r['redis_commands_per_single_fit']:.1f} |"
        )
    print(json.dumps({"benchmark": "multihost", "worker_cpu": args.worker_cpu, "rows": rows}))


if __name__ == "__main__":
    main()
