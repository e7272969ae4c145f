"""The environment `codex app-server` gets: an allow-list, and never anything secret-looking.

Codex runs commands the model asks for, so whatever is in its environment is one ``env`` away
from the model. Only what Codex needs to run passes; a credential-like name is dropped even if
someone allow-listed it by mistake.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from agent_runner.codex.config import PLACEHOLDER_ENV

_ALLOWED = re.compile(
    r"^(PATH|HOME|CODEX_HOME|LANG|LANGUAGE|LC_[A-Z]+|TZ|TERM|TMPDIR|USER|"
    r"HTTPS?_PROXY|https?_proxy|NO_PROXY|no_proxy|ALL_PROXY|all_proxy|"
    r"SSL_CERT_FILE|SSL_CERT_DIR|NODE_EXTRA_CA_CERTS|PYTHONPATH)$"
)
_SECRET = re.compile(r"(_KEY$|_TOKEN$|SECRET|PASSWORD|PASSWD|CREDENTIAL|^OPENAI_)", re.IGNORECASE)


def codex_env(source: Mapping[str, str], *, codex_home: str, home: str, placeholder: str) -> dict[str, str]:
    """Build the app-server's environment from ``source`` (normally os.environ)."""
    env = {k: v for k, v in source.items() if _ALLOWED.match(k) and not _SECRET.search(k)}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env["HOME"] = home
    env["CODEX_HOME"] = codex_home
    env[PLACEHOLDER_ENV] = placeholder
    return env
