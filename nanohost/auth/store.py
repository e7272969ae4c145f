"""The one place a ChatGPT sign-in lives: ``<data dir>/auth/chatgpt.json``.

Only the host's user can read it (the directory is 0700, the file 0600; no container mounts the
data dir's ``auth/``). Every write replaces the file atomically: a temporary file in the same
directory, written, fsynced, renamed over the old one, and the directory fsynced, so a crash
leaves either the old tokens or the new ones, never half of each and never a lost rotated
refresh token.

Encrypted at rest when ``NANOHOST_AUTH_KEY_FILE`` names a key file (Fernet: AES-128-CBC with an
HMAC-SHA256; the file is made, 0600, with a new key when missing). Keep that key somewhere the
data dir's backups and copies do not go (a systemd credential, another volume): then a copied
data dir carries no usable token. A plain store is encrypted at its next save once a key is set;
an encrypted one cannot be read without its key (``auth status`` says so; sign in again).

``refresh.lock`` beside it is the file lock that makes a refresh one-at-a-time across every
process using this data dir (the serving host, the CLI); see ``refresher``.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nanohost.auth.tokens import Broken, ChatGPTTokens, TokenFormatError, _now

if TYPE_CHECKING:
    from cryptography.fernet import Fernet

    from nanohost.settings import Settings

STORE_DIR = "auth"
STORE_FILE = "chatgpt.json"
LOCK_FILE = "refresh.lock"


ENCRYPTED_MAGIC = b"nanohost-encrypted-v1\n"
RESERVE = 64 * 1024
"""Bytes a prepared save writes ahead: more than any sign-in takes (tokens of a few KiB each,
encrypted or not)."""


@dataclass
class PreparedSave:
    """A save made ready before a refresh (``TokenStore.prepare_save``)."""

    fernet: Fernet | None
    fd: int
    tmp: str


def marked_broken(tokens: ChatGPTTokens, reason: str) -> ChatGPTTokens:
    return ChatGPTTokens(**{**tokens.__dict__, "broken": Broken(reason, _now().isoformat())})


class TokenStore:
    def __init__(self, data_dir: Path, key_file: Path | None = None) -> None:
        self.dir = data_dir / STORE_DIR
        self.path = self.dir / STORE_FILE
        self.lock_path = self.dir / LOCK_FILE
        self.key_file = key_file

    @classmethod
    def for_settings(cls, settings: Settings) -> TokenStore:
        return cls(settings.data_dir, settings.auth_key_file)

    def _fernet(self, *, create: bool) -> Fernet | None:
        if self.key_file is None:
            return None
        from cryptography.fernet import Fernet

        try:
            key = self.key_file.read_bytes().strip()
        except FileNotFoundError:
            if not create:
                raise TokenFormatError(f"the key file {self.key_file} is missing") from None
            key = Fernet.generate_key()
            fd = os.open(self.key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(key + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
        try:
            return Fernet(key)
        except ValueError:
            raise TokenFormatError(f"{self.key_file} does not hold a valid key") from None

    def ensure_dir(self) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)

    def load(self) -> ChatGPTTokens | None:
        """The stored sign-in, or None when the host is not signed in."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        if raw.startswith(ENCRYPTED_MAGIC):
            fernet = self._fernet(create=False)
            if fernet is None:
                raise TokenFormatError(f"{self.path} is encrypted and NANOHOST_AUTH_KEY_FILE is not set")
            from cryptography.fernet import InvalidToken

            try:
                raw = fernet.decrypt(raw[len(ENCRYPTED_MAGIC) :].strip())
            except InvalidToken:
                raise TokenFormatError(f"{self.path} does not decrypt with {self.key_file}") from None
        try:
            return ChatGPTTokens.from_json(json.loads(raw))
        except (ValueError, TokenFormatError) as exc:
            raise TokenFormatError(
                f"{self.path} is unreadable ({exc}); run `nanohost auth login` again"
            ) from None

    def prepare_save(self) -> PreparedSave:
        """Everything a save needs, made ready before anything is sent to the issuer: the
        directory, the key (loaded, or made when missing), and a temporary file beside the store
        with room for the tokens already written (``RESERVE`` bytes, fsynced), so that the save
        after a refresh, which must not fail, has nothing left to fail at but the write and the
        rename. Raises ``OSError`` or ``TokenFormatError`` (a bad key) when the store cannot be
        written; then no refresh may be sent. ``commit`` or ``discard`` it."""
        self.ensure_dir()
        fernet = self._fernet(create=True)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".chatgpt.", suffix=".json")
        try:
            os.fchmod(fd, 0o600)
            written = 0
            while written < RESERVE:  # blocks of our own, so a full disk fails here, not later
                written += os.write(fd, bytes(min(65536, RESERVE - written)))
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return PreparedSave(fernet, fd, tmp)

    def commit(self, prepared: PreparedSave, tokens: ChatGPTTokens) -> None:
        """Write ``tokens`` into the prepared file and put it in place of the store, atomically and
        durably (see the module docstring)."""
        data = json.dumps(tokens.to_json(), indent=2).encode()
        if prepared.fernet is not None:
            data = ENCRYPTED_MAGIC + prepared.fernet.encrypt(data) + b"\n"
        try:
            with os.fdopen(prepared.fd, "r+b") as handle:
                handle.seek(0)
                handle.write(data)
                handle.truncate(len(data))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(prepared.tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(prepared.tmp)
            raise
        dir_fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def discard(self, prepared: PreparedSave) -> None:
        """A prepared save that will not be made (the refresh failed before rotating anything)."""
        with contextlib.suppress(OSError):
            os.close(prepared.fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(prepared.tmp)

    def save(self, tokens: ChatGPTTokens) -> None:
        """Replace the stored sign-in atomically and durably (see the module docstring)."""
        self.commit(self.prepare_save(), tokens)

    def mark_broken(self, tokens: ChatGPTTokens, reason: str) -> ChatGPTTokens:
        """Record that the issuer refused the refresh token for good (kept until the next login)."""
        broken = marked_broken(tokens, reason)
        self.save(broken)
        return broken

    def delete(self) -> bool:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True
