"""PgBouncer in transaction mode in front of PostgreSQL (`calib stack --pooler`; docker-compose's
`pooler` profile reads the same settings from services/pooler/pgbouncer.ini).

The API and the workers connect through it (CALIB_DATABASE_URL), so thousands of client
connections share a few server connections; what needs a session of its own reaches the
database directly (CALIB_DIRECT_DATABASE_URL): migrations, and LISTEN where Redis is not the broker.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

# The pooler's own settings, the same for `calib stack --pooler` and docker-compose.
SETTINGS = {
    "pool_mode": "transaction",
    "max_client_conn": "2000",
    "default_pool_size": "20",
    "reserve_pool_size": "5",
    # psycopg sends none of these itself; a driver that does is not refused for it.
    "ignore_startup_parameters": "extra_float_digits,options",
    "auth_type": "any",
}


def config(direct_url: str, port: int, listen: str = "127.0.0.1") -> str:
    """pgbouncer.ini for a pooler on `listen:port` in front of the database of `direct_url`."""
    url = sa.make_url(direct_url)
    server = f"host={url.host or '127.0.0.1'} port={url.port or 5432} user={url.username or 'postgres'}"
    if url.password:
        server += f" password={url.password}"
    lines = ["[databases]", f"* = {server}", "", "[pgbouncer]", f"listen_addr = {listen}", f"listen_port = {port}"]
    lines += ["unix_socket_dir =", f"admin_users = {url.username or 'postgres'}"]
    lines += [f"{key} = {value}" for key, value in SETTINGS.items()]
    return "\n".join(lines) + "\n"


def pooled_url(direct_url: str, port: int, host: str = "127.0.0.1") -> str:
    return sa.make_url(direct_url).set(host=host, port=port).render_as_string(hide_password=False)


@contextmanager
def running(direct_url: str, run_dir: Path, port: int) -> Iterator[dict[str, str]]:
    """PgBouncer for the time of a block: yields the CALIB_* variables that send a process through it."""
    child = start(direct_url, run_dir, port)
    try:
        yield {"CALIB_DATABASE_URL": pooled_url(direct_url, port), "CALIB_DIRECT_DATABASE_URL": direct_url}
    finally:
        child.terminate()
        child.wait(10)


def start(direct_url: str, run_dir: Path, port: int, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start PgBouncer (Debian's `pgbouncer` package) and wait until it accepts connections."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(binary).exists():
        raise FileNotFoundError("pgbouncer is not installed (Debian: apt-get install pgbouncer)")
    run_dir.mkdir(parents=True, exist_ok=True)
    ini = run_dir / "pgbouncer.ini"
    ini.write_text(config(direct_url, port))
    # PgBouncer refuses to run as root; it reads its file first, then takes the user given.
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    with (log or run_dir / "pgbouncer.log").open("ab") as out:
        child = subprocess.Popen(
            [binary, *user, str(ini)], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise RuntimeError(f"pgbouncer exited at start ({child.returncode}); see {run_dir}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return child
        except OSError:
            time.sleep(0.05)
    child.kill()
    raise RuntimeError(f"pgbouncer did not listen on {port} within 10 s")
