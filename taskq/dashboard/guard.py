"""The dashboard's front door: who may ask, from where, and what the answers may do.

- **Auth.** ``--auth user:password`` asks every request for HTTP Basic credentials. The
  password is kept only as an HMAC under a key made at start-up, and a request's is
  compared by its HMAC in constant time, so neither its length nor its prefix leaks. Ten
  failures from one address within a minute and that address waits the minute out.
- **Host.** Bound to loopback, only requests naming a loopback host are served: a web page
  elsewhere cannot point a DNS name at 127.0.0.1 and read the dashboard (DNS rebinding).
- **CSRF.** Actions change the fleet, so they must be POSTs with a JSON body, the token the
  page was served with in ``X-CSRF-Token``, and, when the browser says where it comes
  from, an ``Origin`` naming this host. A form on another site can send none of these.
- **Headers.** A strict Content-Security-Policy (the page loads only its own files), no
  framing (an action's confirmation cannot be clickjacked), no sniffing, no referrer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..exceptions import ConfigurationError

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

REALM = "taskq dashboard"
FAILURES_ALLOWED = 10
FAILURE_WINDOW = 60.0
TRACKED_ADDRESSES = 10_000
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Credentials:
    """A user and a keyed hash of the password; the password itself is not kept."""

    user: str
    key: bytes = field(repr=False)
    digest: bytes = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> Credentials:
        user, colon, password = text.partition(":")
        if not colon or not user or not password:
            raise ConfigurationError(
                "--auth wants user:password (both non-empty), e.g. --auth admin:s3cret; "
                "TASKQ_DASHBOARD_AUTH keeps it out of the process list."
            )
        key = secrets.token_bytes(32)
        return cls(user, key, _mac(key, password))

    def check(self, authorization: str | None) -> bool:
        if not authorization or authorization[:6].lower() != "basic ":
            return False
        try:
            decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, _, password = decoded.partition(":")
        same_user = hmac.compare_digest(_mac(self.key, user), _mac(self.key, self.user))
        return hmac.compare_digest(_mac(self.key, password), self.digest) and same_user


def _mac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def is_loopback(address: str) -> bool:
    host = address.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_of(header: str) -> str:
    """The host of a Host header, without the port (IPv6 literals keep no brackets)."""
    return (urlsplit(f"//{header}").hostname or "").lower()


class Guard:
    """ASGI middleware in front of the whole dashboard."""

    def __init__(self, app: ASGIApp, csrf_token: str, credentials: Credentials | None,
                 loopback_only: bool, clock: Callable[[], float] = time.monotonic):  # fmt: skip
        self.app = app
        self.csrf_token = csrf_token
        self.credentials = credentials
        self.loopback_only = loopback_only
        self.clock = clock
        self._failures: dict[str, list[float]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = self._refuse(scope, headers)
        if refusal is not None:
            status, text, extra = refusal
            await _answer(send, status, text, extra)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def _refuse(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str, list[Any]] | None:
        if self.loopback_only and host_of(headers.get("host", "")) not in LOOPBACK_NAMES:
            return 421, "This dashboard answers only to localhost (it is bound to loopback).", []
        if self.credentials is not None:
            client = (scope.get("client") or ("?", 0))[0]
            if self._locked_out(client):
                return 429, "Too many failed logins from this address: wait a minute.", []
            if not self.credentials.check(headers.get("authorization")):
                if headers.get("authorization"):
                    self._failed(client)
                challenge = (b"www-authenticate", f'Basic realm="{REALM}"'.encode())
                return 401, "Authentication required.", [challenge]
        if scope["method"] in UNSAFE_METHODS:
            return self._csrf(headers)
        return None

    def _csrf(self, headers: dict[str, str]) -> tuple[int, str, list[Any]] | None:
        token = headers.get("x-csrf-token", "")
        if not hmac.compare_digest(token.encode(), self.csrf_token.encode()):
            return 403, "Missing or wrong CSRF token: reload the page and try again.", []
        if headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return 415, "Actions take a JSON body (Content-Type: application/json).", []
        origin = headers.get("origin")
        host = headers.get("host", "").lower()
        if origin and origin != "null" and urlsplit(origin).netloc.lower() != host:
            return 403, "The request comes from another site (Origin does not match).", []
        return None

    def _locked_out(self, client: str) -> bool:
        recent = [t for t in self._failures.get(client, ()) if self.clock() - t < FAILURE_WINDOW]
        if recent:
            self._failures[client] = recent
        else:
            self._failures.pop(client, None)
        return len(recent) >= FAILURES_ALLOWED

    def _failed(self, client: str) -> None:
        if client not in self._failures and len(self._failures) >= TRACKED_ADDRESSES:
            self._failures.pop(next(iter(self._failures)))
        self._failures.setdefault(client, []).append(self.clock())


async def _answer(send: Send, status: int, text: str, extra: list[Any]) -> None:
    body = json.dumps({"error": text}).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode()), *HEADERS, *extra]  # fmt: skip
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


__all__ = ["Credentials", "Guard", "host_of", "is_loopback"]
