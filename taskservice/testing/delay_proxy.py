"""A TCP proxy that delays a server's answers: a slow network in front of a local Redis, without netem.

``python -m taskservice.testing.delay_proxy --upstream 127.0.0.1:6379 --delay-ms 20 --port 7000``
forwards every connection to the upstream server. What the client sends goes through at once;
every chunk the server answers is held ``delay_ms`` from the moment it arrived, then passed on in
order, so each round trip takes that much longer while pipelining and concurrency stay as they
are (a second request does not wait for the first's delay). ``delay_proxy(upstream_port, delay_s)``
runs it as a child process in its own process group and yields the port to connect to.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from taskservice.testing.processes import free_port, spawn, stop_process, wait_for_port

CHUNK_BYTES = 64 * 1024


async def _forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay_s`` after it arrived; close ``writer`` at the end."""
    held: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def release() -> None:
        while True:
            due, data = await held.get()
            wait_s = due - time.monotonic()
            if wait_s > 0:
                await asyncio.sleep(wait_s)
            if not data:
                return
            writer.write(data)
            await writer.drain()

    releasing = asyncio.create_task(release())
    try:
        while data := await reader.read(CHUNK_BYTES):
            held.put_nowait((time.monotonic() + delay_s, data))
        held.put_nowait((time.monotonic() + delay_s, b""))  # the end, after what came before it
        await releasing
    finally:
        releasing.cancel()
        with contextlib.suppress(OSError):
            writer.close()


async def serve(port: int, upstream_host: str, upstream_port: int, delay_s: float) -> None:
    """Serve on 127.0.0.1:``port`` until cancelled."""

    async def connection(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(upstream_host, upstream_port)
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(
                _forward(client_reader, server_writer, 0.0),
                _forward(server_reader, client_writer, delay_s),
            )
        except OSError:  # a reset on either side ends both directions
            pass
        finally:
            for writer in (server_writer, client_writer):
                writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


@contextlib.contextmanager
def delay_proxy(upstream_port: int, delay_s: float, log_path: Path, upstream_host: str = "127.0.0.1") -> Iterator[int]:
    """A proxy process in front of ``upstream_host:upstream_port``; yields its port, stops it after."""
    port = free_port()
    args = [sys.executable, "-m", "taskservice.testing.delay_proxy", "--port", str(port)]
    args += ["--upstream", f"{upstream_host}:{upstream_port}", "--delay-ms", repr(delay_s * 1000)]
    process = spawn(args, os.environ, log_path)
    try:
        wait_for_port(port, timeout_s=20, process=process)
        yield port
    finally:
        stop_process(process, timeout_s=5)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m taskservice.testing.delay_proxy", description=__doc__)
    parser.add_argument("--port", type=int, required=True, help="where to listen, on 127.0.0.1")
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the server")
    parser.add_argument("--delay-ms", type=float, required=True, help="added to every answer of the server")
    options = parser.parse_args()
    host, _, upstream_port = options.upstream.rpartition(":")
    try:
        import uvloop  # a faster loop keeps the proxy's own cost out of what is measured

        uvloop.install()
    except ImportError:
        pass
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(options.port, host, int(upstream_port), options.delay_ms / 1000))


if __name__ == "__main__":
    main()
