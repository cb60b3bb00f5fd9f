"""Keys and certificates for message signing (taskq/security.py): read, checked, stored.

RSA keys only (Celery signs with nothing else), X.509 certificates in PEM, a store that is a
folder, a file or a glob. An expired certificate is refused wherever it is met.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .config import DIGESTS  # MD5 and SHA-1 left out: collisions can be made for both
from .exceptions import ConfigurationError, SecurityError

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
except ImportError as exc:  # pragma: no cover - the test suite has it
    raise ConfigurationError(
        f"Message signing needs the cryptography package ({exc}): pip install 'taskq[auth]'"
    ) from exc


def digest_algorithm(name: str) -> hashes.HashAlgorithm:
    """The hash for a digest name (``"sha256"``); ``ConfigurationError`` for any other."""
    if name.lower() not in DIGESTS:
        raise ConfigurationError(f"Unknown digest {name!r}: use one of {', '.join(DIGESTS)}")
    algorithm: hashes.HashAlgorithm = getattr(hashes, name.upper())()
    return algorithm


def pss(algorithm: hashes.HashAlgorithm) -> padding.PSS:
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
            self.public_key().verify(signature, data, pss(algorithm), algorithm)
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


__all__ = [
    "CertStore",
    "Certificate",
    "digest_algorithm",
    "load_certificate",
    "load_key",
    "load_store",
    "pss",
]
