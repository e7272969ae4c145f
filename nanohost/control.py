"""A nudge from the CLI to the running host: ``<data dir>/control.sock``.

The CLI edits the database (the one source of truth) and then says one word on this socket so
the host acts now instead of at its next sweep: ``sweep`` (look at every session: restarts,
config changes) or ``tasks`` (look at the scheduled tasks). Nothing else is accepted, the socket
is the host user's only (mode 0600), and a CLI that finds no host simply leaves the change for the
next start. It carries no data, so it grants nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

SOCKET_NAME = "control.sock"
WORDS = frozenset({"sweep", "tasks"})


class ControlSocket:
    """The host's end: calls ``on_word`` for each known word it is told."""

    def __init__(self, data_dir: Path, on_word: Callable[[str], None]) -> None:
        self.path = data_dir / SOCKET_NAME
        self._on_word = on_word
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.path.unlink(missing_ok=True)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        self.path.chmod(0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        self.path.unlink(missing_ok=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = (await asyncio.wait_for(reader.readline(), 5)).decode(errors="replace").strip()
            if line in WORDS:
                self._on_word(line)
                writer.write(b"ok\n")
            else:
                writer.write(b"unknown\n")
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()


def poke(data_dir: Path, word: str) -> bool:
    """Tell the running host ``word``; False when no host listens (the change waits for it)."""
    if word not in WORDS:
        raise ValueError(f"unknown control word {word!r}")
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(2)
            sock.connect(str(data_dir / SOCKET_NAME))
            sock.sendall(f"{word}\n".encode())
            return sock.recv(16).startswith(b"ok")
    except OSError:
        return False
