"""The one place a ChatGPT sign-in lives: ``<data dir>/auth/chatgpt.json``.

Only the host's user can read it (the directory is 0700, the file 0600; no container mounts the
data dir's ``auth/``). Every write replaces the file atomically: a temporary file in the same
directory, written, fsynced, renamed over the old one, and the directory fsynced, so a crash
leaves either the old tokens or the new ones, never half of each and never a lost rotated
refresh token. Not encrypted at rest: the host's own disk and user are the trust boundary.

``refresh.lock`` beside it is the file lock that makes a refresh one-at-a-time across every
process using this data dir (the serving host, the CLI); see ``refresher``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

from nanohost.auth.tokens import Broken, ChatGPTTokens, TokenFormatError, _now

STORE_DIR = "auth"
STORE_FILE = "chatgpt.json"
LOCK_FILE = "refresh.lock"


class TokenStore:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / STORE_DIR
        self.path = self.dir / STORE_FILE
        self.lock_path = self.dir / LOCK_FILE

    def ensure_dir(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)

    def load(self) -> ChatGPTTokens | None:
        """The stored sign-in, or None when the host is not signed in."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            return ChatGPTTokens.from_json(json.loads(text))
        except (ValueError, TokenFormatError) as exc:
            raise TokenFormatError(
                f"{self.path} is unreadable ({exc}); run `nanohost auth login` again"
            ) from None

    def save(self, tokens: ChatGPTTokens) -> None:
        """Replace the stored sign-in atomically and durably (see the module docstring)."""
        self.ensure_dir()
        data = json.dumps(tokens.to_json(), indent=2).encode()
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".chatgpt.", suffix=".json")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def mark_broken(self, tokens: ChatGPTTokens, reason: str) -> ChatGPTTokens:
        """Record that the issuer refused the refresh token for good (kept until the next login)."""
        broken = ChatGPTTokens(**{**tokens.__dict__, "broken": Broken(reason, _now().isoformat())})
        self.save(broken)
        return broken

    def delete(self) -> bool:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True
