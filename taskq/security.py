"""Message signing: Celery's ``auth`` serializer, read and written with ``cryptography``.

A signed task message has the content type ``application/data``. Its body is base64 text;
decoded, it is five fields joined by the two bytes ``\\x00\\x01``:

    base64(signer) SEP base64(signature) SEP content_type SEP content_encoding SEP body

``body`` is the message serialized by the inner serializer (JSON by default), as it would
travel unsigned; the signature covers those bytes only (RSA-PSS, MGF1 with the digest,
the longest salt). ``signer`` names the certificate that checks it: the values of its
issuer's attributes and its serial number, joined by spaces. A worker looks the signer
up in its certificate store, refuses an unknown or expired certificate or a bad
signature, and only then decodes the body, and only with a serializer it allows: the
inner content type is not covered by the signature, so it is not trusted to pick one.

Bodies are signed, not encrypted: anyone who reads the broker reads the arguments.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kombu.serialization import dumps

from .certificates import (
    Certificate,
    CertStore,
    digest_algorithm,
    load_certificate,
    load_key,
    load_store,
    pss,
)
from .config import DIGESTS
from .exceptions import ConfigurationError, SecurityError
from .serializers import AUTH, CONTENT_TYPES, serializer_name

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

    from .app import Taskq

CONTENT_TYPE = CONTENT_TYPES[AUTH]
CONTENT_ENCODING = "utf-8"
SEPARATOR = b"\x00\x01"


# ------------------------------------------------------------------------- the envelope


@dataclass(frozen=True)
class Envelope:
    """The decoded ``auth`` body: who signed which bytes, and how those bytes decode."""

    signer: str
    signature: bytes
    content_type: str
    content_encoding: str
    body: bytes


def pack(envelope: Envelope) -> bytes:
    """The ``auth`` body as it goes on the wire (base64 text, as bytes)."""
    fields = SEPARATOR.join(
        [
            base64.b64encode(envelope.signer.encode()),
            base64.b64encode(envelope.signature),
            envelope.content_type.encode(),
            envelope.content_encoding.encode(),
            envelope.body,
        ]
    )
    return base64.b64encode(fields)


def unpack(data: bytes | str) -> Envelope:
    """An ``auth`` body's fields, not yet checked; ``SecurityError`` if it is not one."""
    try:
        raw = base64.b64decode(data.encode() if isinstance(data, str) else data)
        signer, signature, content_type, encoding, body = raw.split(SEPARATOR, 4)
        return Envelope(
            base64.b64decode(signer).decode(),
            base64.b64decode(signature),
            content_type.decode(),
            encoding.decode(),
            body,
        )
    except (binascii.Error, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise SecurityError(f"Not a signed (auth) message body: {exc}") from None


# ------------------------------------------------------------------ signing and checking


@dataclass(frozen=True)
class Signer:
    """Signs task messages with one private key, under the name of its certificate."""

    key: rsa.RSAPrivateKey
    certificate: Certificate
    digest: str = "sha256"
    serializer: str = "json"  # the inner serializer

    def sign(self, body: bytes, content_type: str, content_encoding: str) -> bytes:
        algorithm = digest_algorithm(self.digest)
        signature = self.key.sign(body, pss(algorithm), algorithm)
        return pack(Envelope(self.certificate.id, signature, content_type, content_encoding, body))

    def dumps(self, payload: Any) -> tuple[str, str, bytes]:
        """``(content_type, content_encoding, body)`` of ``payload``, signed."""
        content_type, encoding, body = dumps(payload, serializer=self.serializer)
        data = body.encode(encoding) if isinstance(body, str) else bytes(body)
        return CONTENT_TYPE, CONTENT_ENCODING, self.sign(data, content_type, encoding)


@dataclass(frozen=True)
class Verifier:
    """Checks signed messages against a certificate store."""

    store: CertStore
    digest: str = "sha256"
    accept: frozenset[str] = frozenset({CONTENT_TYPES["json"]})  # inner content types

    def open(self, data: bytes | str, now: datetime | None = None) -> Envelope:
        """The envelope of a signed body whose signature holds; ``SecurityError`` if not."""
        envelope = unpack(data)
        cert = self.store.find(envelope.signer)
        cert.verify(envelope.body, envelope.signature, self.digest, now)
        if envelope.content_type not in self.accept:
            raise SecurityError(
                f"Signed body is {envelope.content_type!r}, which allowed_serializers does "
                f"not allow ({', '.join(sorted(self.accept))})"
            )
        return envelope

    def loads(self, data: bytes | str) -> Any:
        """A signed body, checked and decoded (kombu's serializer registry calls this)."""
        from kombu.serialization import loads

        envelope = self.open(data)
        return loads(
            envelope.body, envelope.content_type, envelope.content_encoding, accept=self.accept
        )


@dataclass(frozen=True)
class Security:
    """What ``app.setup_security()`` made: the client's signer and the worker's verifier."""

    signer: Signer
    verifier: Verifier


@dataclass(frozen=True)
class SecurityOptions:
    """Celery's ``setup_security`` arguments, each filled in from its setting."""

    key: str
    certificate: str
    store: str
    key_password: str | bytes | None = None
    digest: str = "sha256"
    serializer: str = "json"
    allowed_serializers: tuple[str, ...] = ("json",)


def load(options: SecurityOptions) -> Security:
    """Read the key, certificate and store the options name; every problem said at once."""
    o = options
    digest_algorithm(o.digest)
    allowed = frozenset(CONTENT_TYPES[_inner(name)] for name in o.allowed_serializers)
    if CONTENT_TYPES[_inner(o.serializer)] not in allowed:
        raise ConfigurationError(
            f"setup_security(serializer={o.serializer!r}): allowed_serializers must name it "
            "too, or the workers would refuse what this client signs"
        )
    key = load_key(_read(o.key, "security_key"), o.key_password, o.key)
    cert = load_certificate(_read(o.certificate, "security_certificate"), o.certificate)
    if cert.expired():
        raise SecurityError(
            f"Certificate {o.certificate} expired on {cert.not_after:%Y-%m-%d}: every worker "
            "would refuse the messages it signs"
        )
    if key.public_key().public_numbers() != cert.public_key().public_numbers():
        raise SecurityError(f"security_key {o.key} is not the key of {o.certificate}")
    signer = Signer(key, cert, o.digest.lower(), _inner(o.serializer))
    verifier = Verifier(load_store(o.store), o.digest.lower(), allowed)
    return Security(signer, verifier)


def setup(
    app: Taskq,
    allowed_serializers: Iterable[str] | None,
    key: str | None,
    key_password: str | bytes | None,
    cert: str | None,
    store: str | None,
    digest: str | None,
    serializer: str,
) -> Security:
    """``app.setup_security()``: load what the arguments or settings name, and sign with it."""
    c = app.conf
    chosen = {
        "security_key": key or c.security_key,
        "security_certificate": cert or c.security_certificate,
        "security_cert_store": store or c.security_cert_store,
    }
    missing = [name for name, value in chosen.items() if not value]
    if missing:
        raise ConfigurationError(
            f"setup_security() needs {', '.join(missing)} (as settings or arguments)"
        )
    loaded = load(
        SecurityOptions(
            key=chosen["security_key"],
            certificate=chosen["security_certificate"],
            store=chosen["security_cert_store"],
            key_password=key_password or c.security_key_password,
            digest=digest or c.security_digest,
            serializer=serializer,
            allowed_serializers=tuple(allowed_serializers or ("json",)),
        )
    )
    # Task messages only, as Celery: remote control follows these two settings (and
    # kombu's registry, below), so a signing fleet's commands are signed both ways.
    # Results and events stay JSON. A signing Celery fleet must keep results in JSON too
    # (result_accept_content=["json"]: with accept_content ["auth"] alone, Celery's own
    # clients refuse its JSON results); taskq reads and writes those. docs/security.md.
    c.update(task_serializer="auth", accept_content=["auth"])
    register_with_kombu(loaded)
    return loaded


def _inner(name: str) -> str:
    try:
        inner = serializer_name(name)
    except ValueError as exc:
        raise ConfigurationError(f"Serializer {name!r}: {exc}") from None
    if inner == AUTH:
        raise ConfigurationError("the serializer inside a signed message cannot be 'auth'")
    return inner


def _read(path: str, setting: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SecurityError(f"Cannot read {setting} {path!r}: {exc.strerror}") from None


def register_with_kombu(security: Security) -> None:
    """Make kombu's ``auth`` serializer this one, for what kombu serializes itself.

    Remote control (the pidbox) encodes with ``task_serializer`` and decodes with
    ``accept_content`` through kombu's registry, as Celery's does, so a signing fleet signs
    its commands and replies too. kombu's registry is one per process: the last app to
    call ``setup_security`` in a process is the one that signs them.
    """
    from kombu.serialization import registry

    registry.register(
        AUTH,
        lambda payload: security.signer.dumps(payload)[2].decode(),
        security.verifier.loads,
        content_type=CONTENT_TYPE,
        content_encoding=CONTENT_ENCODING,
    )


__all__ = [
    "CONTENT_TYPE",
    "DIGESTS",
    "SEPARATOR",
    "CertStore",
    "Certificate",
    "Envelope",
    "Security",
    "SecurityOptions",
    "Signer",
    "Verifier",
    "digest_algorithm",
    "load",
    "load_certificate",
    "load_key",
    "load_store",
    "pack",
    "register_with_kombu",
    "setup",
    "unpack",
]
