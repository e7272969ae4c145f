"""A ChatGPT sign-in: its tokens and the claims Codex reads from them.

The id token is a JWT whose payload names the account (``https://api.openai.com/auth``:
``chatgpt_account_id``, ``chatgpt_plan_type``, ``chatgpt_user_id``) and the e-mail. Nothing here
verifies a signature: the tokens come from the issuer over TLS (or from the operator's own
``auth.json``), and only their shape and claims are read, as Codex itself does.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

AUTH_CLAIMS = "https://api.openai.com/auth"
PROFILE_CLAIMS = "https://api.openai.com/profile"


class TokenFormatError(ValueError):
    """Tokens that cannot be used; the message says what is missing."""


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT (unverified), or ``{}`` when ``token`` is not one."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        return {}
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def jwt_expiry(token: str) -> datetime | None:
    exp = jwt_claims(token).get("exp")
    if isinstance(exp, int | float) and not isinstance(exp, bool):
        return datetime.fromtimestamp(exp, UTC)
    return None


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Broken:
    """A refresh the issuer refused for good: nothing but a new sign-in helps."""

    reason: str
    at: str


@dataclass(frozen=True)
class ChatGPTTokens:
    """What ``<data dir>/auth/chatgpt.json`` holds."""

    id_token: str
    access_token: str
    refresh_token: str
    account_id: str
    last_refresh: str = field(default_factory=lambda: _now().isoformat())
    email: str | None = None
    plan: str | None = None
    broken: Broken | None = None

    @classmethod
    def from_oauth(cls, id_token: str, access_token: str, refresh_token: str) -> ChatGPTTokens:
        """Tokens as the issuer returns them; the account comes from the id token's claims."""
        if not (id_token and access_token and refresh_token):
            raise TokenFormatError("the issuer's answer lacks an id, access or refresh token")
        claims = jwt_claims(id_token)
        if not claims:
            raise TokenFormatError("the id token is not a JWT")
        auth = _object(claims.get(AUTH_CLAIMS))
        account = auth.get("chatgpt_account_id")
        if not isinstance(account, str) or not account:
            raise TokenFormatError("the id token names no ChatGPT account (chatgpt_account_id)")
        profile = _object(claims.get(PROFILE_CLAIMS))
        email = claims.get("email") or profile.get("email")
        plan = auth.get("chatgpt_plan_type")
        return cls(
            id_token=id_token,
            access_token=access_token,
            refresh_token=refresh_token,
            account_id=account,
            email=email if isinstance(email, str) else None,
            plan=plan if isinstance(plan, str) else None,
        )

    @classmethod
    def from_codex_auth_json(cls, data: Any) -> ChatGPTTokens:
        """The tokens of a Codex ``auth.json`` (``codex login``), which must be a ChatGPT sign-in."""
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, dict):
            raise TokenFormatError("this auth.json holds no ChatGPT tokens (an API-key login?)")
        values = {k: tokens.get(k) for k in ("id_token", "access_token", "refresh_token")}
        if not all(isinstance(v, str) and v for v in values.values()):
            raise TokenFormatError("this auth.json lacks an id, access or refresh token")
        made = cls.from_oauth(**values)  # type: ignore[arg-type]
        account = tokens.get("account_id")
        if isinstance(account, str) and account and account != made.account_id:
            raise TokenFormatError("this auth.json's account_id does not match its id token")
        return made

    def rotated(self, id_token: str | None, access_token: str, refresh_token: str | None) -> ChatGPTTokens:
        """After a refresh: the new access token, the rotated refresh token (when the issuer sent
        one), the new id token and its claims (when sent and readable). Never raises: the
        rotated refresh token must be kept whatever else the answer holds."""
        base: ChatGPTTokens | None = None
        if id_token:
            try:
                base = ChatGPTTokens.from_oauth(id_token, access_token, refresh_token or self.refresh_token)
            except TokenFormatError:
                base = None  # an id token we cannot read: keep the old one and its claims
        return ChatGPTTokens(
            id_token=base.id_token if base else self.id_token,
            access_token=access_token,
            refresh_token=refresh_token or self.refresh_token,
            account_id=base.account_id if base else self.account_id,
            email=base.email if base else self.email,
            plan=base.plan if base else self.plan,
        )

    def expires_at(self) -> datetime | None:
        return jwt_expiry(self.access_token)

    def expired(self, margin_s: float = 30.0) -> bool:
        """Whether the access token's own ``exp`` has passed (or will within ``margin_s``)."""
        expiry = self.expires_at()
        return expiry is not None and (expiry - _now()).total_seconds() <= margin_s

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> ChatGPTTokens:
        if not isinstance(data, dict):
            raise TokenFormatError("the token store does not hold an object")
        try:
            broken = data.get("broken")
            return cls(
                id_token=str(data["id_token"]),
                access_token=str(data["access_token"]),
                refresh_token=str(data["refresh_token"]),
                account_id=str(data["account_id"]),
                last_refresh=str(data.get("last_refresh") or ""),
                email=data.get("email"),
                plan=data.get("plan"),
                broken=Broken(str(broken["reason"]), str(broken["at"])) if isinstance(broken, dict) else None,
            )
        except KeyError as exc:
            raise TokenFormatError(f"the token store lacks {exc.args[0]}") from None
