"""The web chat's password and session cookies, kept in the host database (``ChannelStore("web")``).

There is one password per host, made by ``nanohost setup`` and shown once; only an scrypt hash
with a random salt is stored, so a copy of the database does not reveal it. A login earns a
cookie ``<expiry>.<nonce>.<HMAC-SHA256>`` signed with a random secret from the same store; the
host keeps no session table. Setting a new password also makes a new secret, which logs every
browser out: resetting the password is how an operator revokes a leaked cookie.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

from nanohost.channels.state import ChannelStore

CHANNEL = "web"
PASSWORD_KEY = "password_hash"
SECRET_KEY = "cookie_secret"
COOKIE = "nanohost_session"
SESSION_SECONDS = 30 * 24 * 3600
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash``: the parameters travel with the hash so they can be raised later."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${_b64(salt)}${_b64(digest)}"


def check_password(stored: str, password: str) -> bool:
    """True when ``password`` matches the stored hash (compared in constant time)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        given = hashlib.scrypt(
            password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=len(_unb64(digest))
        )
    except ValueError:
        return False
    return hmac.compare_digest(given, _unb64(digest))


class WebAuth:
    """The password and cookie secret of one host, read from the database on every use so that
    `nanohost web password` takes effect in a running host at once."""

    def __init__(self, store: ChannelStore) -> None:
        self.store = store

    def has_password(self) -> bool:
        return bool(self.store.get(PASSWORD_KEY))

    def set_password(self, password: str | None = None) -> str:
        """Store (a hash of) ``password``, or of a new random one; returns the password in clear."""
        password = password or secrets.token_urlsafe(16)
        self.store.set(PASSWORD_KEY, hash_password(password))
        self.store.set(SECRET_KEY, secrets.token_urlsafe(32))  # every existing session ends
        return password

    def ensure_password(self) -> str | None:
        """Make a password when there is none; returns it then (to show once), else None."""
        return None if self.has_password() else self.set_password()

    def check_password(self, password: str) -> bool:
        stored = self.store.get(PASSWORD_KEY)
        return bool(stored) and check_password(str(stored), password)

    def _secret(self, stored: str | None = None) -> bytes:
        """The cookie secret (``stored``: as just read), made on first use."""
        secret = stored if stored is not None else self.store.get(SECRET_KEY)
        if not secret:
            secret = secrets.token_urlsafe(32)
            self.store.set(SECRET_KEY, secret)
        return secret.encode()

    def issue_cookie(self, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + SESSION_SECONDS)
        body = f"{expires}.{secrets.token_urlsafe(12)}"
        return f"{body}.{self._sign(body, self._secret())}"

    def check_cookie(self, value: str | None, now: float | None = None) -> bool:
        """True for a cookie this host signed (with its current secret) that has not expired.
        The password and the secret are read together, in one transaction (every web request
        checks its cookie)."""
        if not value:
            return False
        stored = self.store.get_many(PASSWORD_KEY, SECRET_KEY)
        if not stored.get(PASSWORD_KEY):
            return False
        body, _, signature = value.rpartition(".")
        expires = body.split(".")[0]
        expected = self._sign(body, self._secret(stored.get(SECRET_KEY)))
        if not expires.isdigit() or not hmac.compare_digest(signature.encode(), expected.encode()):
            return False
        return int(expires) > (time.time() if now is None else now)

    @staticmethod
    def _sign(body: str, secret: bytes) -> str:
        return _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())
