"""A closed-loop HTTP/1.1 load generator, run in its own process.

``python -m bench.loadgen HOST PORT PATH --connections 50 --duration-s 10`` keeps that many
keep-alive connections busy, each sending the next request as soon as the previous answer
is complete, and prints one JSON line: requests, errors, req/s, p50/p99 latency. Raw
sockets on uvloop, so one core drives several times what a one-process uvicorn serves.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import cast

from bench.stats import percentile


class _Connection(asyncio.Protocol):
    """One keep-alive connection: send a request, parse the response, record, repeat."""

    def __init__(self, request: bytes, deadline: float, latencies: list[float], done: asyncio.Future[None]) -> None:
        self.request = request
        self.deadline = deadline
        self.latencies = latencies
        self.done = done
        self.errors = 0
        self.buffer = b""
        self.sent_at = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass it
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.sent_at = time.perf_counter()
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            status = head[9:12]
            self.buffer = self.buffer[end:]
            now = time.perf_counter()
            if status.startswith(b"2"):
                self.latencies.append(now - self.sent_at)
            else:
                self.errors += 1
            if now >= self.deadline:
                assert self.transport is not None
                self.transport.close()
                return
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def run_load(
    host: str, port: int, path: str, connections: int, duration_s: float, method: str = "POST"
) -> dict[str, float]:
    """Drive ``connections`` closed-loop connections for ``duration_s``; return the figures."""
    loop = asyncio.get_running_loop()
    request = f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: 0\r\n\r\n".encode()
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + duration_s
    protocols: list[_Connection] = []
    waits: list[asyncio.Future[None]] = []
    for _ in range(connections):
        done: asyncio.Future[None] = loop.create_future()
        _, protocol = await loop.create_connection(
            lambda done=done: _Connection(request, deadline, latencies, done),  # type: ignore[misc]
            host,
            port,
        )
        protocols.append(protocol)
        waits.append(done)
    await asyncio.wait_for(asyncio.gather(*waits), timeout=duration_s + 30)
    elapsed_s = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "errors": sum(p.errors for p in protocols),
        "req_per_s": len(latencies) / elapsed_s,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("path")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--method", default="POST")
    options = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # the stock loop is slower but measures the same thing
        pass
    figures = asyncio.run(
        run_load(options.host, options.port, options.path, options.connections, options.duration_s, options.method)
    )
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
