"""The dashboard's browser session: a signed cookie, and the CSRF token derived from it.

Why a cookie obtained with the admin token rather than HTTP Basic: a browser cannot send a
Bearer header, Basic has no logout and its native prompt cannot be styled or tested; a login
form that checks the token with the app's own admin dependencies, then a short-lived
``HttpOnly``, ``SameSite=Strict`` cookie, keeps the token out of every later request and
lets a person log out.

The cookie is ``<nonce>.<authenticated 0|1>.<expires unix s>.<HMAC-SHA256>``. It holds no
secret; it is worth what the HMAC key is worth. Every action form carries
``HMAC(key, "csrf:" + nonce)``: another site can make the browser send the cookie, but it
cannot read the page to learn the token. A new login makes a new nonce (no session fixation).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable

COOKIE_NAME = "taskservice_dashboard"
SecretSource = str | bytes | Callable[[], str | bytes | None] | None


@dataclasses.dataclass(frozen=True)
class Session:
    nonce: str
    authenticated: bool
    expires_at: int  # unix seconds


class SessionSigner:
    """Issues and checks session cookies and CSRF tokens with one HMAC key.

    ``secret`` may be a callable read at each use (an app whose key follows a setting that
    tests change); when it is None, or returns None, a random per-process key is used, and
    sessions then hold only within one server process.
    """

    def __init__(self, secret: SecretSource, max_age_s: float) -> None:
        self._secret = secret
        self._fallback = secrets.token_bytes(32)
        self.max_age_s = max_age_s

    def _key(self) -> bytes:
        secret = self._secret() if callable(self._secret) else self._secret
        if secret is None:
            return self._fallback
        raw = secret.encode() if isinstance(secret, str) else secret
        return hashlib.sha256(b"taskservice-dashboard-session\0" + raw).digest()

    def _mac(self, payload: str) -> str:
        return hmac.new(self._key(), payload.encode(), hashlib.sha256).hexdigest()

    def new(self, *, authenticated: bool) -> Session:
        return Session(secrets.token_urlsafe(18), authenticated, int(time.time() + self.max_age_s))

    def dump(self, session: Session) -> str:
        payload = f"{session.nonce}.{int(session.authenticated)}.{session.expires_at}"
        return f"{payload}.{self._mac(payload)}"

    def load(self, cookie: str | None) -> Session | None:
        """The session in ``cookie``, or None if it is missing, forged or expired."""
        if not cookie or len(cookie) > 300:
            return None
        parts = cookie.split(".")
        if len(parts) != 4 or parts[1] not in ("0", "1") or not parts[2].isdigit():
            return None
        nonce, flag, expires, mac = parts
        if not hmac.compare_digest(mac, self._mac(f"{nonce}.{flag}.{expires}")):
            return None
        if int(expires) < time.time():
            return None
        return Session(nonce, flag == "1", int(expires))

    def csrf_token(self, session: Session) -> str:
        return self._mac(f"csrf:{session.nonce}")

    def csrf_ok(self, session: Session | None, token: str | None) -> bool:
        if session is None or not token:
            return False
        return hmac.compare_digest(token, self.csrf_token(session))
