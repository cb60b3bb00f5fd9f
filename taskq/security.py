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
import glob
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kombu.serialization import dumps

from .config import DIGESTS  # MD5 and SHA-1 left out: collisions can be made for both
from .exceptions import ConfigurationError, SecurityError
from .serializers import AUTH, CONTENT_TYPES, serializer_name

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
except ImportError as exc:  # pragma: no cover - the test suite has it
    raise ConfigurationError(
        f"Message signing needs the cryptography package ({exc}): pip install 'taskq[auth]'"
    ) from exc

CONTENT_TYPE = CONTENT_TYPES[AUTH]
CONTENT_ENCODING = "utf-8"
SEPARATOR = b"\x00\x01"


def digest_algorithm(name: str) -> hashes.HashAlgorithm:
    """The hash for a digest name (``"sha256"``); ``ConfigurationError`` for any other."""
    if name.lower() not in DIGESTS:
        raise ConfigurationError(f"Unknown digest {name!r}: use one of {', '.join(DIGESTS)}")
    algorithm: hashes.HashAlgorithm = getattr(hashes, name.upper())()
    return algorithm


def _pss(algorithm: hashes.HashAlgorithm) -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(algorithm), salt_length=padding.PSS.MAX_LENGTH)


# ------------------------------------------------------------------- keys and certificates


@dataclass(frozen=True)
class Certificate:
    """An X.509 certificate with an RSA key: who signs, and until when."""

    x509: x509.Certificate
    source: str = "<memory>"

    @property
    def id(self) -> str:
        """How a signed message names it: the issuer's attribute values, then the serial."""
        issuer = " ".join(str(attribute.value) for attribute in self.x509.issuer)
        return f"{issuer} {self.x509.serial_number}"

    @property
    def not_after(self) -> datetime:
        return self.x509.not_valid_after_utc

    def expired(self, now: datetime | None = None) -> bool:
        return (now or datetime.now(UTC)) >= self.not_after

    def public_key(self) -> rsa.RSAPublicKey:
        key = self.x509.public_key()
        assert isinstance(key, rsa.RSAPublicKey)  # load_certificate checked it
        return key

    def verify(
        self, data: bytes, signature: bytes, digest: str, now: datetime | None = None
    ) -> None:
        """Check ``signature`` of ``data``; ``SecurityError`` if it is bad or this expired."""
        if self.expired(now):
            raise SecurityError(
                f"Certificate {self.id!r} ({self.source}) expired on {self.not_after:%Y-%m-%d}"
            )
        algorithm = digest_algorithm(digest)
        try:
            self.public_key().verify(signature, data, _pss(algorithm), algorithm)
        except InvalidSignature:
            raise SecurityError(f"Bad signature: the body was not signed by {self.id!r}") from None


def load_certificate(pem: bytes, source: str = "<memory>") -> Certificate:
    """A PEM certificate; ``SecurityError`` if it is not one or its key is not RSA."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise SecurityError(f"Invalid certificate {source}: {exc}") from None
    if not isinstance(cert.public_key(), rsa.RSAPublicKey):
        raise SecurityError(f"Certificate {source}: only RSA keys sign Celery messages")
    return Certificate(cert, source)


def load_key(
    pem: bytes, password: str | bytes | None, source: str = "<memory>"
) -> rsa.RSAPrivateKey:
    """A PEM private key, decrypted with ``password`` when it is encrypted."""
    secret = password.encode() if isinstance(password, str) else password
    try:
        key = serialization.load_pem_private_key(pem, password=secret or None)
    except TypeError as exc:  # a password for a plain key, or none for an encrypted one
        raise SecurityError(f"Private key {source}: {exc}") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        hint = " (is security_key_password right?)" if secret else ""
        raise SecurityError(f"Invalid private key {source}{hint}: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise SecurityError(f"Private key {source}: only RSA keys sign Celery messages")
    return key


@dataclass(frozen=True)
class CertStore:
    """The certificates a worker trusts, by the id a signed message names them with."""

    certificates: Mapping[str, Certificate] = field(default_factory=dict)

    @classmethod
    def of(cls, certificates: Iterable[Certificate]) -> CertStore:
        found: dict[str, Certificate] = {}
        for cert in certificates:
            if cert.id in found:
                raise SecurityError(
                    f"Two certificates are named {cert.id!r}: {found[cert.id].source} and "
                    f"{cert.source}"
                )
            found[cert.id] = cert
        return cls(found)

    def find(self, signer: str) -> Certificate:
        cert = self.certificates.get(signer)
        if cert is None:
            raise SecurityError(f"Unknown signer {signer!r}: no such certificate in the store")
        return cert


def load_store(path: str) -> CertStore:
    """Every certificate in a folder, or in the files a glob pattern (or a path) names.

    An expired certificate is an error here, as in Celery: a store that holds one would
    refuse its signer's messages one by one, long after the start.
    """
    pattern = os.path.join(path, "*") if os.path.isdir(path) else path
    files = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
    if not files:
        raise SecurityError(f"security_cert_store {path!r} holds no certificate files")
    certs = [load_certificate(Path(p).read_bytes(), p) for p in files]
    for cert in certs:
        if cert.expired():
            raise SecurityError(
                f"Certificate {cert.id!r} in the store ({cert.source}) expired on "
                f"{cert.not_after:%Y-%m-%d}"
            )
    return CertStore.of(certs)


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
        signature = self.key.sign(body, _pss(algorithm), algorithm)
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
    "unpack",
]
