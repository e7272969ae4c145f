"""A scripted Responses-API model server on 127.0.0.1: the fake of the one outside system Codex talks to.

It speaks the wire format ``codex`` 0.138 accepts (SSE: ``response.output_item.done`` items then
``response.completed`` with an id; see CODEX.md §2). Tests queue replies with ``script``: text, a
tool call, a held stream released by an ``asyncio.Event``, or an HTTP error. With nothing queued
it echoes the last user text as ``echo: <text>``. Every request is recorded (headers and JSON
body) so tests can assert what the agent was sent.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer


@dataclass
class Reply:
    """One scripted response. ``hold`` keeps the stream open after the first event until set."""

    text: str | None = None
    tool_call: dict[str, Any] | None = None
    status: int = 200
    error_body: str = '{"error":{"message":"scripted error"}}'
    hold: asyncio.Event | None = None
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False
    """Close the connection abruptly after the first event (a stream cut mid-response)."""
    usage: tuple[int, int] | None = None
    """(input, output) tokens reported in ``response.completed`` (none by default)."""
    reasoning: str | None = None
    """A reasoning summary sent before the reply (a ``reasoning`` output item)."""

    @classmethod
    def command(cls, cmd: str) -> Reply:
        """The model asks Codex to run a shell command."""
        return cls(tool_call={"name": "exec_command", "arguments": json.dumps({"cmd": cmd})})

    @classmethod
    def function(cls, name: str, **arguments: Any) -> Reply:
        """The model calls a function tool by its plain name (OpenCode's MCP tools are
        ``<server>_<tool>``)."""
        return cls(tool_call={"name": name, "arguments": json.dumps(arguments)})

    @classmethod
    def mcp(cls, server: str, tool: str, **arguments: Any) -> Reply:
        """The model calls an MCP tool (namespaced as codex presents them)."""
        return cls(
            tool_call={"namespace": f"mcp__{server}", "name": tool, "arguments": json.dumps(arguments)}
        )


@dataclass
class Recorded:
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def user_texts(self) -> list[str]:
        return user_texts(self.body)

    @property
    def all_text(self) -> str:
        return json.dumps(self.body)


def user_texts(body: dict[str, Any]) -> list[str]:
    """Texts of the user messages in a request's input, in order."""
    texts = []
    for item in body.get("input", []):
        if isinstance(item, dict) and item.get("role") == "user":
            for part in item.get("content", []):
                if isinstance(part, dict) and part.get("type") == "input_text":
                    texts.append(str(part.get("text", "")))
    return texts


class ModelServer:
    """The fake upstream. Start with ``await start()``; ``url`` ends in ``/v1``."""

    def __init__(self, *, record: bool = True) -> None:
        self.record = record
        """Keep every request (``requests``); a benchmark turns it off: each Codex request carries
        the whole thread, so keeping them grows the process's heap (and its collections) with
        the square of the turns."""
        self.requests: list[Recorded] = []
        self.queue: deque[Reply] = deque()
        self.streaming = 0
        """Streams open right now (past their first event, e.g. held)."""
        self._arrived = asyncio.Condition()
        self._ids = itertools.count(1)
        app = web.Application()
        app.router.add_post("/v1/responses", self._responses)
        self._server = TestServer(app, host="127.0.0.1")

    @property
    def url(self) -> str:
        return str(self._server.make_url("/v1"))

    async def start(self) -> None:
        await self._server.start_server()

    async def close(self) -> None:
        await self._server.close()

    def script(self, *replies: Reply | str) -> None:
        self.queue.extend(Reply(text=r) if isinstance(r, str) else r for r in replies)

    async def wait_for_requests(self, count: int, timeout: float = 30.0) -> list[Recorded]:
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.requests) >= count)
        return self.requests

    async def wait_streaming(self, count: int = 1, timeout: float = 30.0) -> None:
        """Wait until ``count`` streams are open (a held reply has sent its first event)."""
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: self.streaming >= count)

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if self.record:
            self.requests.append(Recorded(dict(request.headers), body))
        async with self._arrived:
            self._arrived.notify_all()
        reply = self.queue.popleft() if self.queue else None
        if reply is None:
            texts = [
                t for t in user_texts(body) if not t.startswith(("# AGENTS.md", "<environment_context>"))
            ]
            reply = Reply(text=f"echo: {texts[-1] if texts else ''}")
        if reply.status != 200:
            return web.Response(
                status=reply.status,
                text=reply.error_body,
                content_type="application/json",
                headers=reply.headers,
            )
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", **reply.headers})
        await response.prepare(request)
        response_id = f"resp_{next(self._ids)}"
        created = {"id": response_id, "created_at": 1_796_000_000, "model": str(body.get("model", ""))}
        await self._event(response, {"type": "response.created", "response": created})
        self.streaming += 1
        async with self._arrived:
            self._arrived.notify_all()
        try:
            if reply.hold is not None:
                await reply.hold.wait()
        finally:
            self.streaming -= 1
        if reply.drop:
            assert request.transport is not None
            request.transport.abort()  # no response.completed: the stream is cut
            return response
        if reply.reasoning is not None:  # a reasoning summary, before what the model does
            thought = {
                "type": "reasoning",
                "id": f"rs_{next(self._ids)}",
                "summary": [{"type": "summary_text", "text": reply.reasoning}],
                "content": None,
                "encrypted_content": None,
            }
            await self._event(response, {"type": "response.output_item.done", "item": thought})
        if reply.tool_call is not None:
            item = {
                "type": "function_call",
                "id": f"fc_{next(self._ids)}",
                "call_id": f"call_{next(self._ids)}",
                "status": "completed",
                **reply.tool_call,
            }
            await self._event(
                response, {"type": "response.output_item.added", "output_index": 0, "item": item}
            )
        else:
            item = {
                "type": "message",
                "role": "assistant",
                "id": f"msg_{next(self._ids)}",
                "status": "completed",
                "content": [{"type": "output_text", "text": reply.text or "", "annotations": []}],
            }
            added = {**item, "content": [], "status": "in_progress"}
            await self._event(
                response, {"type": "response.output_item.added", "output_index": 0, "item": added}
            )
            delta = {"item_id": item["id"], "output_index": 0, "content_index": 0, "delta": reply.text or ""}
            await self._event(response, {"type": "response.output_text.delta", **delta})
        await self._event(response, {"type": "response.output_item.done", "output_index": 0, "item": item})
        usage: dict[str, Any] = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
        if reply.usage is not None:
            tokens_in, tokens_out = reply.usage
            usage = {
                "input_tokens": tokens_in,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": tokens_out,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": tokens_in + tokens_out,
            }
        done = {"id": response_id, "status": "completed", "incomplete_details": None, "usage": usage}
        await self._event(response, {"type": "response.completed", "response": done})
        await response.write_eof()
        return response

    @staticmethod
    async def _event(response: web.StreamResponse, data: dict[str, Any]) -> None:
        await response.write(f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode())


@pytest.fixture
async def model_server() -> AsyncIterator[ModelServer]:
    server = ModelServer()
    await server.start()
    yield server
    await server.close()
