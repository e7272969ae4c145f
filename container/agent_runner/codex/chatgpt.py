"""The dummy ChatGPT sign-in a ``chatgpt``-auth group's Codex runs with.

Codex takes its ChatGPT request path (``Authorization: Bearer <access token>`` plus
``chatgpt-account-id``, the ChatGPT request shape) when its model provider has
``requires_openai_auth = true`` and ``$CODEX_HOME/auth.json`` holds ChatGPT tokens. Here those
"tokens" are the session's gateway placeholder, which only works at the host's gateway; the
gateway swaps in the host's real access token and account id (``nanohost.auth.upstream``). No
real token is ever in the container.

What Codex 0.138 reads from the file (codex-rs/login ``token_data.rs``, ``auth/manager.rs``):

- ``id_token`` must parse as a JWT (three dot-separated parts, base64url JSON payload); the
  claims it reads are ``email`` and ``https://api.openai.com/auth`` → ``chatgpt_account_id``,
  ``chatgpt_plan_type``, ``chatgpt_user_id``. No signature is checked.
- It refreshes on its own when the access token is a JWT whose ``exp`` has passed, or (not a
  JWT, as here) when ``last_refresh`` is over 8 days old, and after a 401. A refresh goes to
  ``CODEX_REFRESH_TOKEN_URL_OVERRIDE``, set to the gateway's ``/v1/oauth/token``, which answers
  with the same placeholder: it never reaches the real issuer.

The file is rewritten at every Codex start (``last_refresh`` = now), and emptied in ``api-key``
mode so a group switched back never keeps a ChatGPT path.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REFRESH_URL_ENV = "CODEX_REFRESH_TOKEN_URL_OVERRIDE"
DUMMY_ACCOUNT = "nanohost-gateway"
"""The account id Codex sends; the gateway drops it and sends the host's."""


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def dummy_id_token() -> str:
    claims = {
        "email": "chatgpt@nanohost.invalid",
        "https://api.openai.com/auth": {
            "chatgpt_account_id": DUMMY_ACCOUNT,
            "chatgpt_plan_type": "plus",
            "chatgpt_user_id": DUMMY_ACCOUNT,
        },
    }
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.nanohost"


def dummy_auth_json(placeholder: str) -> dict[str, Any]:
    return {
        "auth_mode": "chatgpt",
        "OPENAI_API_KEY": None,
        "tokens": {
            "id_token": dummy_id_token(),
            "access_token": placeholder,
            "refresh_token": placeholder,
            "account_id": DUMMY_ACCOUNT,
        },
        "last_refresh": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }


def write_auth_json(codex_home: Path, placeholder: str | None) -> Path:
    """Replace ``auth.json`` atomically: the dummy sign-in, or (``None``) empty."""
    codex_home.mkdir(parents=True, exist_ok=True)
    text = json.dumps(dummy_auth_json(placeholder)) if placeholder is not None else ""
    fd, tmp = tempfile.mkstemp(dir=codex_home, prefix=".auth.", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, codex_home / "auth.json")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return codex_home / "auth.json"
