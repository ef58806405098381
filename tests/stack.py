"""The real service as child processes: migrations, the gunicorn API and N Celery workers.

The e2e tests and `python -m benchmarks.scaling` start the service this way, with
the same command lines as `calib stack` and docker-compose.yml (services.cli.processes).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from migrations.apply import upgrade
from services.cli import processes
from shared.runtime.settings import Settings
from shared.store import tokens
from shared.store.db import Database
from tests.backends import free_port, settings_of

TERMINAL = {"succeeded", "diverged", "failed", "cancelled"}


def proc_stat(pid: int | str) -> tuple[str, list[str]]:
    """A process's name and the fields of /proc/PID/stat after it (fields[0] is its state, [1] its
    parent, [7] its minor faults, [11] and [12] its user and system ticks); OSError once it is gone."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()


def cpu_of(fields: list[str]) -> float:
    """User + system CPU seconds from proc_stat's fields."""
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_part(part_of: Callable[[int, str], str | None], parts: Iterable[str]) -> dict[str, float]:
    """CPU seconds so far (user + system) of every running process, summed by `part_of(pid, name)`
    (None: not counted); each of `parts` is present, 0 where no process counted."""
    used = dict.fromkeys(parts, 0.0)
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            name, fields = proc_stat(entry)
        except OSError:
            continue
        part = part_of(int(entry), name)
        if part is not None:
            used[part] = used.get(part, 0.0) + cpu_of(fields)
    return used


def descendants(roots: set[int]) -> set[int]:
    """The processes in the trees under `roots` (Linux /proc), roots included."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            _, fields = proc_stat(entry.name)
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
    found = set(roots)
    grew = True
    while grew:
        grew = False
        for pid, parent in parents.items():
            if parent in found and pid not in found:
                found.add(pid)
                grew = True
    return found


def peak_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Stack:
    def __init__(
        self,
        env: dict[str, str],
        logs: Path,
        workers: int = 1,
        tenant: str = "e2e",
        deliveries: int | None = None,
        api_processes: int = 2,
    ) -> None:
        self.env = {**os.environ, **env}
        self.logs = logs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.children: list[subprocess.Popen[bytes]] = []
        self.workers = workers
        # Webhook delivery workers (`calib worker --deliveries`): by default one where callbacks
        # are allowed at all, none elsewhere (each is one more process to start).
        self.deliveries = deliveries if deliveries is not None else int(bool(env.get("CALIB_WEBHOOK_ALLOWED_HOSTS")))
        self.tenant = tenant
        # gunicorn processes: 2 as served (`calib up`, docker-compose). A stack whose test is about the
        # workers takes 1: each API process costs about 2 s of CPU to start, and the fault modules
        # start a few dozen stacks.
        self.api_processes = api_processes
        self.token = ""
        self.http = httpx.Client(base_url=self.url, timeout=30)

    def _spawn(self, name: str, command: list[str], first: bool = False) -> subprocess.Popen[bytes]:
        """`first`: the API, which tests find at children[0] (even when it starts again on another port)."""
        with (self.logs / f"{name}.log").open("ab") as log:
            child = subprocess.Popen(
                processes.resolve(command), env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.children.insert(0 if first else len(self.children), child)
        return child

    def start(self) -> Stack:
        self.logs.mkdir(parents=True, exist_ok=True)
        # The schema and this stack's token in this process (what `calib db upgrade` and `calib tokens
        # create` do, the same functions): two interpreters fewer to start per stack, about 1.8 s of
        # CPU each time. Both commands run as processes in other tests (test_migrations; create_token).
        settings = self.settings()
        upgrade(settings)
        db = Database.from_settings(settings)
        try:
            self.token = tokens.create(db, self.tenant).token
        finally:
            db.dispose()
        self.env["CALIB_TOKEN"] = self.token  # for `calib` commands the tests run against this stack
        self.http.headers["Authorization"] = f"Bearer {self.token}"
        # The API and the workers start together: the workers (torch, Celery) take longer than the
        # API, and nothing of theirs waits on it. About 1.5 s less per stack, a few dozen stacks a suite.
        api = self._spawn("api", self._api_command(), first=True)
        for _ in range(self.workers):
            self.add_worker()
        for _ in range(self.deliveries):
            self._spawn(f"worker{len(self.children)}", processes.delivery_worker_command())
        self._confirm_api(api)
        self.wait_ready()
        self.wait_workers_consume()
        return self

    def _api_command(self) -> list[str]:
        embedded = not self.env.get("CALIB_DATABASE_URL")
        return processes.api_command(f"127.0.0.1:{self.port}", workers=self.api_processes, embedded=embedded)

    def _confirm_api(self, api: subprocess.Popen[bytes], attempts: int = 3) -> None:
        """The API (children[0]) answering on its port as this stack. free_port() releases the
        port it found, so another test process's stack can take it before gunicorn binds: gunicorn
        then retries for 5 s and exits, while /readyz on that port, answered by the other stack,
        says 200 and this stack's token gets 401. Seen once in CI (test_faults, embedded). On a
        port taken so, the API starts again on another (still children[0]: tests find it there)."""
        for attempt in range(1, attempts + 1):
            if self._answers_as_this_stack(api):
                return
            with contextlib.suppress(ProcessLookupError):
                os.killpg(api.pid, signal.SIGKILL)
            api.wait(10)
            self.children.remove(api)
            if attempt == attempts:
                break
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self.http.base_url = httpx.URL(self.url)
            api = self._spawn("api", self._api_command(), first=True)
        raise RuntimeError(f"the API found no free port in {attempts} tries; see {self.logs}")

    def _answers_as_this_stack(self, api: subprocess.Popen[bytes], timeout: float = 60) -> bool:
        """True once the port serves this stack (its token is known there); False if the API
        process exits first (its port was taken)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if api.poll() is not None:
                return False
            try:
                if self.http.get("/v1/usage").status_code == 200:
                    return True
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the API did not answer in {timeout} s; see {self.logs}")

    def wait_workers_consume(self, timeout: float = 60) -> None:
        """Until every worker says it is ready (Celery's "ready." line, after it has declared its
        queues); a worker that died at start is an error naming its log, not a later time-out."""
        deadline = time.monotonic() + timeout
        pending = {f"worker{i}": child for i, child in enumerate(self.children) if i > 0}
        while pending and time.monotonic() < deadline:
            for name, child in list(pending.items()):
                log = (self.logs / f"{name}.log").read_text(errors="replace")
                if child.poll() is not None:
                    tail = "\n".join(log.splitlines()[-15:])
                    raise RuntimeError(f"{name} died at start (exit {child.returncode}); its log ends:\n{tail}")
                if " ready." in log:
                    del pending[name]
            time.sleep(0.1)
        if pending:
            raise RuntimeError(f"workers not ready in {timeout} s: {sorted(pending)}; see {self.logs}")

    def settings(self) -> Settings:
        """This stack's backend as Settings (its data directory, database and broker)."""
        return settings_of(self.env)

    def create_token(self, tenant: str) -> str:
        """A new token of `tenant`, through the same `calib tokens create` an operator runs."""
        done = subprocess.run(
            processes.resolve(["calib", "tokens", "create", "--tenant", tenant]),
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout.strip()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.http.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"the stack did not get ready; see {self.logs}")

    def add_worker(self) -> subprocess.Popen[bytes]:
        return self._spawn(f"worker{len(self.children)}", processes.worker_command())

    def worker_peak_rss(self) -> int:
        """The largest peak resident set (VmHWM, bytes) of any worker process or its pool children."""
        workers = {c.pid for c in self.children[1:]}
        return max((peak_rss(pid) for pid in descendants(workers)), default=0)

    def stop(self) -> None:
        """The end of a test's stack: the API stopped as an operator stops it; the workers given a
        second, then killed. A Celery worker on the embedded broker takes 4-5 s to stop warm (its
        loop notices the signal only when a 2 s poll ends, then its beat stops), a minute of the
        suite's time over its stacks. Tests that stop a worker on purpose signal it themselves
        (test_faults: kill -9 mid-chunk)."""
        for child in self.children:
            if child.poll() is None:
                os.killpg(child.pid, signal.SIGTERM)
        for index, child in enumerate(self.children):
            try:
                child.wait(20 if index == 0 else 1)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait(5)
        self.http.close()

    def cancel_unfinished(self) -> None:
        """Cancel the fits of this stack's tenant that are still queued or running (a module that
        shares the stack leaves its workers free for the next)."""
        for status in ("running", "queued"):
            url: str | None = f"/v1/fits?status={status}&limit=1000"
            while url:
                page = self.http.get(url).json()
                for fit in page["items"]:
                    self.http.post(f"/v1/fits/{fit['id']}/cancel")
                url = page.get("next")

    def submit(self, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        r = self.http.post("/v1/fits", json=body, **kwargs)
        assert r.status_code == 202, r.text
        return dict(r.json())

    def wait(self, fit_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fit = dict(self.http.get(f"/v1/fits/{fit_id}").json())
            if fit["status"] in TERMINAL:
                return fit
            time.sleep(0.01)
        raise TimeoutError(f"fit {fit_id} did not end in {timeout} s")

    def wait_batch(self, batch_id: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = dict(self.http.get(f"/v1/batches/{batch_id}").json())
            if batch["status"] in ("completed", "cancelled"):
                return batch
            time.sleep(0.05)
        raise TimeoutError(f"batch {batch_id} did not end in {timeout} s")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """/metrics, summed over the API's processes, as {(name, its labels sorted): value}."""
        r = self.http.get("/metrics", headers={"Authorization": ""})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text)
            for s in family.samples
        }

    def losses(self, fit_id: str) -> list[float]:
        out: list[float] = []
        path: str | None = f"/v1/fits/{fit_id}/losses?limit=100000"
        while path:
            page = self.http.get(path).json()
            out += page["loss"]
            path = page["next"]
        return out
