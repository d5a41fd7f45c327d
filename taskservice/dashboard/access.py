"""Who may see the dashboard, and the headers and cookie every dashboard response carries.

- closed (``admin_dependencies=None``, the default): every page answers 403 and says how to open it;
- open (``admin_dependencies=[]``): no login;
- guarded: a request is let in when its session cookie is an authenticated one (from the login
  form, where the token is checked by the app's admin dependencies), or when the request itself
  passes those dependencies (a proxy or script sending ``Authorization: Bearer``).

Every action (a POST) must carry the session's CSRF token, and, when the browser sends an
``Origin``, come from this host.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import Request
from starlette.responses import Response

from taskservice.authorization import DependencyCheck
from taskservice.dashboard.session import COOKIE_NAME, SecretSource, Session, SessionSigner

MAX_FORM_BYTES = 128 * 1024
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@dataclasses.dataclass
class Visit:
    """One request to the dashboard: its session (new if it had none) and whether it is let in."""

    request: Request
    session: Session
    fresh: bool  # the session cookie must be (re)sent
    authorized: bool


class FormError(Exception):
    """The body of an action is not a form we accept (too large, wrong type)."""


class Access:
    def __init__(
        self, admin_dependencies: Sequence[Any] | None, prefix: str, secret: SecretSource, max_age_s: float
    ) -> None:
        self.check = DependencyCheck(admin_dependencies)
        self.signer = SessionSigner(secret, max_age_s)
        self.prefix = prefix

    @property
    def closed(self) -> bool:
        return self.check.closed

    @property
    def needs_login(self) -> bool:
        return not self.check.closed and not self.check.open

    async def visit(self, request: Request) -> Visit:
        session = self.signer.load(request.cookies.get(COOKIE_NAME))
        fresh = session is None
        if session is None:
            session = self.signer.new(authenticated=False)
        if self.check.closed:
            authorized = False
        elif self.check.open or session.authenticated:
            authorized = True
        else:
            authorized = await self.check(request)
        return Visit(request, session, fresh, authorized)

    def csrf(self, visit: Visit) -> str:
        return self.signer.csrf_token(visit.session)

    def action_allowed(self, visit: Visit, form: dict[str, list[str]]) -> bool:
        """The form carries this session's CSRF token, and an ``Origin`` (if sent) is this host."""
        if visit.fresh:  # a POST without our cookie cannot come from one of our pages
            return False
        origin = visit.request.headers.get("origin")
        if origin is not None and origin != "null":
            host = visit.request.headers.get("host", "")
            if urlsplit(origin).netloc.lower() != host.lower():
                return False
        token = (form.get("csrf") or [""])[0]
        return self.signer.csrf_ok(visit.session, token)

    def finish(self, visit: Visit, response: Response, session: Session | None = None) -> Response:
        """``response`` with the security headers, and the session cookie when it is new or changed."""
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers.setdefault("Cache-Control", "no-store")
        if session is not None or visit.fresh:
            chosen = session or visit.session
            response.set_cookie(
                COOKIE_NAME,
                self.signer.dump(chosen),
                max_age=int(self.signer.max_age_s),
                path=self.prefix,
                httponly=True,
                samesite="strict",
                secure=visit.request.url.scheme == "https",
            )
        return response

    def safe_next(self, value: str | None) -> str:
        """Where to go after logging in: a path inside the dashboard, never another site."""
        if not value or not value.startswith(self.prefix) or "//" in value or "\\" in value or len(value) > 2000:
            return self.prefix
        rest = value[len(self.prefix) :]
        return value if rest == "" or rest[0] in "/?" else self.prefix


async def read_form(request: Request) -> dict[str, list[str]]:
    """An ``application/x-www-form-urlencoded`` body (what our forms send), at most ``MAX_FORM_BYTES``."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise FormError("send the dashboard's own form (application/x-www-form-urlencoded)")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormError("the form is too large")
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=1000)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormError(f"the form could not be read: {exc}") from None
