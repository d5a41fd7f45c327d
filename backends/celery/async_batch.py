"""Calls of one Lua script made in the same turn of an event loop go to Redis together, in one pipeline.

Fifty requests that ``aenqueue`` at once would otherwise take fifty connections from the pool and
make fifty writes and fifty reads, most of their cost being the client's per-command work and the
system calls. Queued until the loop has run every coroutine that was ready, they are sent as one
pipeline on one connection: about half the CPU per call, and the more concurrent the calls, the
larger the batch. A lone call waits no more than one turn of the loop.

Each caller gets its own reply or its own error (``raise_on_error=False``); a connection error fails
every call of the batch, as it would have failed each on its own. A caller cancelled while its batch
is in flight has its call executed all the same, as with any command already sent.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from typing import Any

import redis
import redis.asyncio

_Call = tuple[Sequence[Any], "asyncio.Future[Any]"]


class ScriptBatch:
    """``await batch(keys, args)``: run the script, batched with the calls of the same loop turn."""

    def __init__(self, client: redis.asyncio.Redis, source: str) -> None:
        self.client = client
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self._pending: list[_Call] = []
        self._sending: set[asyncio.Task[None]] = set()  # referenced until done

    async def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append(((len(keys), *keys, *args), future))
        if len(self._pending) == 1:
            loop.call_soon(self._flush)  # runs after every callback that is ready in this turn
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Call]) -> None:
        try:
            replies = await self._execute([arguments for arguments, _ in batch])
            if any(isinstance(reply, redis.exceptions.NoScriptError) for reply in replies):
                # a restarted Redis forgot the script: load it, then send again what it refused
                await self.client.script_load(self.source)
                again = [i for i, reply in enumerate(replies) if isinstance(reply, redis.exceptions.NoScriptError)]
                for i, reply in zip(again, await self._execute([batch[i][0] for i in again]), strict=True):
                    replies[i] = reply
        except BaseException as exc:  # the whole batch failed (a connection error, a cancelled loop)
            for _, future in batch:
                if future.done():
                    continue
                if isinstance(exc, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # its caller was cancelled
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    async def _execute(self, calls: Sequence[Sequence[Any]]) -> list[Any]:
        if len(calls) == 1:  # a lone call: a plain command costs less than a pipeline of one
            try:
                return [await self.client.evalsha(self.sha, *calls[0])]
            except redis.exceptions.ResponseError as exc:
                return [exc]
        async with self.client.pipeline(transaction=False) as pipe:
            for arguments in calls:
                pipe.evalsha(self.sha, *arguments)
            return list(await pipe.execute(raise_on_error=False))
