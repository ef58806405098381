"""A TCP proxy that adds a round trip: `python -m benchmarks.delay_proxy --listen 10.77.0.1:15432
--to 127.0.0.1:5432 --rtt-ms 2 --stats /tmp/pg.json`.

This kernel has no `netem`, so the multi-host simulation (benchmarks/multihost.py) puts one of these
in front of PostgreSQL and of Redis. Every piece of data read on one side is written to the other
half the round trip later, in order and without limiting the rate (a delay line per direction, not
a sleep per read), so a request and its answer cost `--rtt-ms` more, as a network hop would.

It also counts what crosses it: connections, and the client's writes (a client sends a request in
one write and waits for the answer, so its writes are its round trips; psycopg sends a statement's
Parse/Bind/Execute/Sync in one), written as JSON to `--stats` every half second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path


class Counts:
    def __init__(self) -> None:
        self.connections = 0
        self.client_writes = 0
        self.client_bytes = 0
        self.server_bytes = 0


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float, count: Counts, from_client: bool
) -> None:
    line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def deliver() -> None:
        while True:
            due, data = await line.get()
            if not data:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        writer.close()

    delivering = asyncio.create_task(deliver())
    try:
        while data := await reader.read(65536):
            if from_client:
                count.client_writes += 1
                count.client_bytes += len(data)
            else:
                count.server_bytes += len(data)
            line.put_nowait((time.monotonic() + delay, data))
    except (ConnectionError, OSError):
        pass
    line.put_nowait((0.0, b""))
    try:
        await delivering
    except (ConnectionError, OSError):
        pass


async def serve(listen: tuple[str, int], target: tuple[str, int], rtt: float, stats: Path | None) -> None:
    count = Counts()
    one_way = rtt / 2

    async def connected(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        count.connections += 1
        try:
            server_r, server_w = await asyncio.open_connection(*target)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(
            _pipe(client_r, server_w, one_way, count, True), _pipe(server_r, client_w, one_way, count, False)
        )

    server = await asyncio.start_server(connected, *listen, reuse_address=True)
    async with server:
        while True:
            if stats is not None:
                # Whole or not at all: a reader between a truncate and its write read an empty file
                # (test_multihost_plumbing, once in CI).
                written = stats.with_name(stats.name + ".part")
                written.write_text(json.dumps(vars(count)))
                written.replace(stats)
            await asyncio.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", required=True, help="host:port")
    parser.add_argument("--to", required=True, help="host:port")
    parser.add_argument("--rtt-ms", type=float, default=0.0)
    parser.add_argument("--stats", type=Path)
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    to_host, to_port = args.to.rsplit(":", 1)
    asyncio.run(serve((host, int(port)), (to_host, int(to_port)), args.rtt_ms / 1000, args.stats))


if __name__ == "__main__":
    main()
