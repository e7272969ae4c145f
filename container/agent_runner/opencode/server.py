"""``opencode serve``: the process, its config, its HTTP API and its event stream.

OpenCode runs as a headless server on a loopback port (``--port 0``: it picks one and prints
``opencode server listening on http://127.0.0.1:PORT``). The runner talks to it like its SDK does:
``POST /session`` (create), ``GET /session/{id}`` (does it still exist), ``POST
/session/{id}/prompt_async`` (a user message; returns at once, the session works in the
background), ``POST /session/{id}/abort``, ``POST /session/{id}/revert``, ``GET
/session/{id}/message`` and the ``GET /event`` SSE stream (``session.status`` busy/idle/retry,
``session.idle``, ``session.error``, ``message.updated``, ``message.part.updated``,
``permission.asked`` …).

The server execs a child that keeps the port when only the parent is killed, so it is started in
its own process group and the whole group is killed on stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import shutil
import signal
import tempfile
from collections import deque
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

LISTENING = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")
START_TIMEOUT = 60.0
STOP_GRACE = 3.0
PROVIDER_ID = "nanohost"
DEFAULT_MODEL = "gpt-5.5"
OFFLINE_ENV = {
    # nothing at start may reach the internet: the container has none, and waiting on it is slow
    "OPENCODE_DISABLE_MODELS_FETCH": "1",
    "OPENCODE_DISABLE_AUTOUPDATE": "1",
    "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
    "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
    "OPENCODE_DISABLE_SHARE": "1",
    "OPENCODE_DISABLE_CLAUDE_CODE": "1",
    "OPENCODE_DISABLE_PROJECT_CONFIG": "1",
}


class ServerError(RuntimeError):
    """The server could not start, or died; the message carries its last output lines."""


class ApiError(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"opencode API answered {status}: {body}")
        self.status = status


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = (await reader.readline()).decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise ServerError(f"opencode answered something that is not HTTP: {status_line[:100]!r}")
    headers: dict[str, str] = {}
    while (line := (await reader.readline()).decode("latin-1").strip()) != "":
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> AsyncIterator[bytes]:
    """The response body as it arrives: chunked, by length, or up to the end of the connection."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                return
            yield await reader.readexactly(size)
            await reader.readline()
    elif "content-length" in headers:
        left = int(headers["content-length"])
        if left:
            yield await reader.readexactly(left)
    else:
        while chunk := await reader.read(65536):
            yield chunk


def build_config(
    *,
    base_url: str,
    placeholder: str,
    model: str | None,
    reasoning_effort: str | None,
    instructions: list[str],
    mcp_servers: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """``opencode.json``: the gateway as the only model provider, the group's instructions through
    OpenCode's own ``instructions``, every MCP server as a local one, nothing that phones home, no
    permission prompt (the container is the sandbox), no title calls."""
    name = model or DEFAULT_MODEL
    entry: dict[str, Any] = {"name": name}
    if reasoning_effort:
        entry["options"] = {"reasoningEffort": reasoning_effort}
    return {
        "$schema": "https://opencode.ai/config.json",
        "autoupdate": False,
        "share": "disabled",
        "model": f"{PROVIDER_ID}/{name}",
        "small_model": f"{PROVIDER_ID}/{name}",
        "enabled_providers": [PROVIDER_ID],
        "instructions": instructions,
        "permission": {"*": "allow"},
        "agent": {"title": {"disable": True}},
        "provider": {
            PROVIDER_ID: {
                "npm": "@ai-sdk/openai",  # bundled in the binary; the Responses API
                "name": "nanohost",
                "options": {"baseURL": base_url, "apiKey": placeholder},
                "models": {name: entry},
            }
        },
        "mcp": {
            server: {
                "type": "local",
                "command": [spec["command"], *spec.get("args", [])],
                "environment": dict(spec.get("env", {})),
                "enabled": True,
            }
            for server, spec in mcp_servers.items()
        },
    }


class Server:
    """One ``opencode serve`` process and a client of its API."""

    def __init__(self, binary: str, *, cwd: Path, home: Path, config: dict[str, Any]) -> None:
        self.binary = binary
        self.cwd = cwd
        self.home = home
        self.config = config
        self.url = ""
        self.process: asyncio.subprocess.Process | None = None
        self.address: tuple[str, int] | None = None
        self.output: deque[str] = deque(maxlen=20)
        self.scratch: Path | None = None
        self._drain: asyncio.Task[None] | None = None

    def env(self, scratch: Path) -> dict[str, str]:
        """Sessions go to ``$HOME/.local/share/opencode`` (the group's mounted data dir); config,
        cache and state to a scratch dir of this process's own (the container may run as a uid
        that owns nothing else under the image's home)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCODE_")}
        env.update(OFFLINE_ENV)
        env.update(
            {
                "HOME": str(self.home),
                "XDG_DATA_HOME": str(self.home / ".local" / "share"),
                "XDG_CONFIG_HOME": str(scratch / "config"),
                "XDG_CACHE_HOME": str(scratch / "cache"),
                "XDG_STATE_HOME": str(scratch / "state"),
                "OPENCODE_CONFIG": str(scratch / "opencode.json"),
            }
        )
        return env

    async def start(self) -> None:
        self.scratch = Path(tempfile.mkdtemp(prefix="nanohost-opencode-"))
        (self.scratch / "opencode.json").write_text(json.dumps(self.config, indent=2))
        (self.home / ".local" / "share" / "opencode").mkdir(parents=True, exist_ok=True)
        try:
            self.process = await asyncio.create_subprocess_exec(
                self.binary,
                "serve",
                "--port",
                "0",
                "--hostname",
                "127.0.0.1",
                cwd=self.cwd,
                env=self.env(self.scratch),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop kills the child it execs too
            )
        except OSError as exc:
            raise ServerError(f"cannot start {self.binary}: {exc}") from exc
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(START_TIMEOUT):
                while True:
                    raw = await self.process.stdout.readline()
                    if not raw:
                        raise ServerError("opencode exited at start: " + " | ".join(self.output))
                    line = raw.decode(errors="replace").rstrip()
                    self.output.append(line)
                    if found := LISTENING.search(line):
                        self.url = found.group(1)
                        break
        except TimeoutError:
            await self.stop()
            raise ServerError(
                "opencode did not start listening in time: " + " | ".join(self.output)
            ) from None
        except ServerError:
            await self.stop()
            raise
        self._drain = asyncio.get_running_loop().create_task(self._keep_draining())
        host, _, port = self.url.removeprefix("http://").partition(":")
        self.address = (host, int(port))

    async def _keep_draining(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        while raw := await self.process.stdout.readline():
            line = raw.decode(errors="replace").rstrip()
            self.output.append(line)
            log.debug("opencode: %s", line)

    async def stop(self) -> None:
        self.address = None
        process = self.process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_GRACE)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        if process is not None:
            with contextlib.suppress(ProcessLookupError):  # a child that outlived its parent
                os.killpg(process.pid, signal.SIGKILL)
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None

    async def _open(
        self, method: str, path: str, body: Any = None, accept: str = "application/json"
    ) -> tuple[int, dict[str, str], asyncio.StreamReader, asyncio.StreamWriter]:
        if self.address is None:
            raise ServerError("the opencode server is not running")
        host, port = self.address
        reader, writer = await asyncio.open_connection(host, port)
        data = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\nAccept: {accept}\r\n"
            + ("Content-Type: application/json\r\n" if body is not None else "")
            + f"Content-Length: {len(data)}\r\n\r\n"
        )
        writer.write(head.encode() + data)
        await writer.drain()
        status, headers = await _read_head(reader)
        return status, headers, reader, writer

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """One API call; the JSON answer (None when empty). A non-2xx answer raises ``ApiError``."""
        status, headers, reader, writer = await self._open(method, path, body)
        try:
            text = b"".join([chunk async for chunk in _body(reader, headers)]).decode(errors="replace")
        finally:
            writer.close()
        if status >= 300:
            raise ApiError(status, text[:500])
        return json.loads(text) if text.strip() else None

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The server's event stream (``GET /event``), one decoded event at a time, until it ends."""
        status, headers, reader, writer = await self._open("GET", "/event", accept="text/event-stream")
        try:
            if status != 200:
                raise ApiError(status, "the event stream was refused")
            pending = b""
            async for chunk in _body(reader, headers):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for raw in lines:
                    line = raw.decode(errors="replace").strip()
                    if not line.startswith("data:"):
                        continue
                    try:
                        event = json.loads(line[5:])
                    except ValueError:
                        continue
                    if isinstance(event, dict):
                        yield event
        finally:
            writer.close()
