"""Message signing (taskq/security.py): keys, certificates, the ``auth`` body, and Celery.

Keys and self-signed certificates are made here with ``cryptography``; Celery 5.7's own
``SecureSerializer`` signs for taskq to check, and checks what taskq signs.
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from kombu.serialization import registry

from taskq import Taskq
from taskq.exceptions import ConfigurationError, MalformedMessage, SecurityError
from taskq.security import (
    SEPARATOR,
    CertStore,
    Security,
    SecurityOptions,
    Verifier,
    load,
    load_certificate,
    load_key,
    load_store,
    unpack,
)
from taskq.worker.strategy import read_message

SIGNED = "application/data"


@dataclass(frozen=True)
class Pair:
    key: Path
    cert: Path
    name: str
    serial: int


def make_pair(
    folder: Path,
    name: str,
    *,
    password: bytes | None = None,
    days: int = 30,
    serial: int = 1000,
) -> Pair:
    """A 2048-bit RSA key and its self-signed certificate, as PEM files in ``folder``."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "taskq tests"),
            x509.NameAttribute(NameOID.COMMON_NAME, name),
        ]
    )
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(now - timedelta(days=2 * abs(days) + 1))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    folder.mkdir(parents=True, exist_ok=True)
    key_path, cert_path = folder / f"{name}.key", folder / f"{name}.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Pair(key_path, cert_path, name, serial)


@pytest.fixture(autouse=True, scope="module")
def kombu_registry_restored() -> Iterator[None]:
    """kombu's serializer registry as it was before these tests, after them.

    ``setup_security`` registers ``auth`` there under kombu's content type for raw bytes;
    Celery's also makes it kombu's default and disables every other serializer (JSON
    too). Left behind, that would decode, or refuse, the messages of the tests that run
    after these in the same process.
    """
    saved = {name: copy.copy(value) for name, value in vars(registry).items()}
    yield
    for name, value in saved.items():
        setattr(registry, name, value)


@pytest.fixture
def pair(tmp_path: Path) -> Pair:
    return make_pair(tmp_path / "keys", "alice", serial=4242)


@pytest.fixture
def store(tmp_path: Path, pair: Pair) -> Path:
    folder = tmp_path / "store"
    folder.mkdir()
    (folder / "alice.pem").write_bytes(pair.cert.read_bytes())
    return folder


def security(pair: Pair, store: Path, **more: Any) -> Security:
    return load(SecurityOptions(str(pair.key), str(pair.cert), str(store), **more))


PAYLOAD = [[2, 3], {"z": "é"}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]


def test_sign_and_verify_round_trip(pair: Pair, store: Path) -> None:
    sec = security(pair, store)
    content_type, encoding, body = sec.signer.dumps(PAYLOAD)
    assert (content_type, encoding) == (SIGNED, "utf-8")
    envelope = sec.verifier.open(body)
    assert envelope.signer == "FR taskq tests alice 4242"  # issuer values, then the serial
    assert (envelope.content_type, envelope.content_encoding) == ("application/json", "utf-8")
    assert json.loads(envelope.body) == PAYLOAD
    assert sec.verifier.loads(body) == PAYLOAD


def test_byte_layout(pair: Pair, store: Path) -> None:
    # base64 over five fields split by \x00\x01: base64(signer), base64(signature), type,
    # encoding, body (the signature of a 2048-bit key is 256 bytes).
    sec = security(pair, store)
    _, _, body = sec.signer.dumps(PAYLOAD)
    fields = base64.b64decode(body).split(SEPARATOR, 4)
    assert base64.b64decode(fields[0]) == b"FR taskq tests alice 4242"
    assert len(base64.b64decode(fields[1])) == 256
    assert fields[2:4] == [b"application/json", b"utf-8"]
    assert json.loads(fields[4]) == PAYLOAD


def tampered(body: bytes, change: Any) -> bytes:
    fields = base64.b64decode(body).split(SEPARATOR, 4)
    change(fields)
    return base64.b64encode(SEPARATOR.join(fields))


def test_a_tampered_body_is_refused(pair: Pair, store: Path) -> None:
    sec = security(pair, store)
    _, _, body = sec.signer.dumps(PAYLOAD)

    def edit(fields: list[bytes]) -> None:
        fields[4] = fields[4].replace(b"[2, 3]", b"[2, 4]")

    with pytest.raises(SecurityError, match="Bad signature"):
        sec.verifier.open(tampered(body, edit))


def test_an_inner_type_the_verifier_does_not_allow_is_refused(pair: Pair, store: Path) -> None:
    # The inner content type is not signed: a signed JSON body relabelled as pickle must
    # not reach pickle.
    sec = security(pair, store)
    _, _, body = sec.signer.dumps(PAYLOAD)

    def relabel(fields: list[bytes]) -> None:
        fields[2] = b"application/x-python-serialize"

    with pytest.raises(SecurityError, match="allowed_serializers does not allow"):
        sec.verifier.open(tampered(body, relabel))


def test_garbage_is_not_a_signed_body(pair: Pair, store: Path) -> None:
    with pytest.raises(SecurityError, match="Not a signed"):
        unpack(b"not base64 at all!")
    with pytest.raises(SecurityError, match="Not a signed"):
        unpack(base64.b64encode(b"only\x00\x01two"))


def test_an_unknown_signer_is_refused(tmp_path: Path, pair: Pair, store: Path) -> None:
    mallory = make_pair(tmp_path / "other", "mallory")
    sec = security(mallory, tmp_path / "other" / "mallory.pem")
    _, _, body = sec.signer.dumps(PAYLOAD)
    with pytest.raises(SecurityError, match="Unknown signer 'FR taskq tests mallory 1000'"):
        security(pair, store).verifier.open(body)


def test_same_name_other_key_is_a_bad_signature(tmp_path: Path, pair: Pair, store: Path) -> None:
    # A forger who copies alice's issuer and serial still lacks her key.
    forger = make_pair(tmp_path / "forger", "alice", serial=4242)
    _, _, body = security(forger, forger.cert).signer.dumps(PAYLOAD)
    with pytest.raises(SecurityError, match="Bad signature"):
        security(pair, store).verifier.open(body)


def test_an_expired_certificate_is_refused(tmp_path: Path, pair: Pair, store: Path) -> None:
    sec = security(pair, store)
    _, _, body = sec.signer.dumps(PAYLOAD)
    later = datetime.now(UTC) + timedelta(days=31)  # past the certificate's end
    with pytest.raises(SecurityError, match="expired on"):
        sec.verifier.open(body, now=later)
    old = make_pair(tmp_path / "old", "old", days=-1)
    with pytest.raises(SecurityError, match=r"'FR taskq tests old 1000' in the store .* expired"):
        load_store(str(old.cert))
    with pytest.raises(SecurityError, match=r"expired on .* would refuse"):
        security(old, store)


def test_key_password(tmp_path: Path, store: Path) -> None:
    locked = make_pair(tmp_path / "locked", "locked", password=b"s3cret")
    assert load_key(locked.key.read_bytes(), "s3cret") is not None
    with pytest.raises(SecurityError, match="is security_key_password right"):
        load_key(locked.key.read_bytes(), "wrong")
    with pytest.raises(SecurityError, match=r"Private key .*encrypted"):
        load_key(locked.key.read_bytes(), None)


def test_bad_files_say_which(tmp_path: Path, pair: Pair, store: Path) -> None:
    with pytest.raises(SecurityError, match="Cannot read security_key"):
        load(SecurityOptions(str(tmp_path / "nope"), str(pair.cert), str(store)))
    with pytest.raises(SecurityError, match="Invalid certificate"):
        load_certificate(b"-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n")
    with pytest.raises(SecurityError, match="holds no certificate"):
        load_store(str(tmp_path / "empty-*.pem"))
    other = make_pair(tmp_path / "other", "other")
    with pytest.raises(SecurityError, match="is not the key of"):
        load(SecurityOptions(str(other.key), str(pair.cert), str(store)))
    with pytest.raises(ConfigurationError, match="Unknown digest"):
        security(pair, store, digest="md5")
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem = ec_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(SecurityError, match="only RSA"):
        load_key(pem, None)


def test_store_by_glob_and_duplicates(tmp_path: Path, pair: Pair) -> None:
    bob = make_pair(tmp_path / "keys", "bob")
    both = load_store(str(tmp_path / "keys" / "*.pem"))
    assert sorted(both.certificates) == ["FR taskq tests alice 4242", "FR taskq tests bob 1000"]
    twin = make_pair(tmp_path / "twin", "bob")
    with pytest.raises(SecurityError, match="Two certificates are named"):
        CertStore.of([load_certificate(p.read_bytes()) for p in (bob.cert, twin.cert)])


# ------------------------------------------------------------------------- Celery 5.7


def celery_serializer(pair: Pair, store: Path, digest: str = "sha256") -> Any:
    from celery.security.certificate import Certificate, FSCertStore
    from celery.security.key import PrivateKey
    from celery.security.serialization import SecureSerializer

    return SecureSerializer(
        PrivateKey(pair.key.read_text()),
        Certificate(pair.cert.read_text()),
        FSCertStore(str(store)),
        digest,
    )


@pytest.mark.parametrize("digest", ["sha256", "sha512"])
def test_celery_signs_taskq_verifies(pair: Pair, store: Path, digest: str) -> None:
    body = celery_serializer(pair, store, digest).serialize(PAYLOAD)
    envelope = security(pair, store, digest=digest).verifier.open(body)
    assert json.loads(envelope.body) == PAYLOAD
    assert security(pair, store, digest=digest).verifier.loads(body) == PAYLOAD


@pytest.mark.parametrize("digest", ["sha256", "sha512"])
def test_taskq_signs_celery_verifies(pair: Pair, store: Path, digest: str) -> None:
    _, _, body = security(pair, store, digest=digest).signer.dumps(PAYLOAD)
    assert celery_serializer(pair, store, digest).deserialize(body.decode()) == PAYLOAD


def test_celery_refuses_what_taskq_refuses(tmp_path: Path, pair: Pair, store: Path) -> None:
    # The same tampering fails in both, so both read the same fields as signed.
    from celery.exceptions import SecurityError as CelerySecurityError

    _, _, body = security(pair, store).signer.dumps(PAYLOAD)

    def edit(fields: list[bytes]) -> None:
        fields[4] = fields[4].replace(b"[2, 3]", b"[2, 4]")

    with pytest.raises(CelerySecurityError):
        celery_serializer(pair, store).deserialize(tampered(body, edit).decode())


def test_byte_layout_matches_celerys(pair: Pair, store: Path) -> None:
    # Everything but the signature (PSS is randomized) is the same bytes.
    ours = base64.b64decode(security(pair, store).signer.dumps(PAYLOAD)[2]).split(SEPARATOR, 4)
    theirs = base64.b64decode(celery_serializer(pair, store).serialize(PAYLOAD)).split(SEPARATOR, 4)
    assert ours[0] == theirs[0] and ours[2:] == theirs[2:]


# --------------------------------------------------------------------- app and worker


def signing_app(pair: Pair, store: Path, **settings: Any) -> Taskq:
    # A queue of its own: kombu's memory broker is one per process, shared by every test.
    settings.setdefault("task_default_queue", f"signing-{uuid.uuid4().hex}")
    app = Taskq("signing", broker="memory://", set_as_current=False, **settings)
    app.setup_security(key=str(pair.key), cert=str(pair.cert), store=str(store))
    return app


def test_setup_security_sets_celerys_settings(pair: Pair, store: Path) -> None:
    app = Taskq(
        "s",
        broker="memory://",
        set_as_current=False,
        security_key=str(pair.key),
        security_certificate=str(pair.cert),
        security_cert_store=str(store),
        security_digest="SHA512",
    )
    app.setup_security()
    assert (app.conf.task_serializer, app.conf.accept_content) == ("auth", ("auth",))
    assert app.security is not None and app.security.signer.digest == "sha512"
    with pytest.raises(ConfigurationError, match="needs security_key, security_certificate"):
        Taskq("t", broker="memory://", set_as_current=False).setup_security()
    with pytest.raises(ConfigurationError, match="security_digest"):
        Taskq("t", broker="memory://", set_as_current=False, security_digest="md5")


def test_auth_without_setup_security_is_a_clear_error() -> None:
    app = Taskq("t", broker="memory://", set_as_current=False, task_serializer="auth")

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    with pytest.raises(ConfigurationError, match=r"call app.setup_security\(\)"):
        add.delay(1, 2)


def test_client_sends_signed_messages_only(pair: Pair, store: Path) -> None:
    app = signing_app(pair, store)

    @app.task(name="t.add")
    def add(x: int, y: int) -> int:
        return x + y

    add.delay(2, 3)
    with app.connection() as conn:
        raw = conn.SimpleQueue(app.conf.task_default_queue).get(timeout=1)
        assert raw.content_type == SIGNED
        accept = frozenset({SIGNED})
        assert app.security is not None
        message = read_message(raw, accept, None, app.security.verifier)
        assert (message.task, message.args) == ("t.add", (2, 3))
    with pytest.raises(ConfigurationError, match="would go unsigned"):
        add.apply_async((1, 2), serializer="json")


def raw_message(body: bytes, content_type: str, headers: dict[str, Any]) -> Any:
    return SimpleNamespace(
        body=body,
        content_type=content_type,
        content_encoding="utf-8",
        headers=headers,
        errors=[],
    )


def test_worker_refuses_unsigned_and_badly_signed(tmp_path: Path, pair: Pair, store: Path) -> None:
    verifier: Verifier = security(pair, store).verifier
    accept = frozenset({SIGNED})
    headers = {"id": "abc", "task": "t.add"}
    plain = json.dumps(PAYLOAD).encode()
    with pytest.raises(MalformedMessage, match="'application/json' is not accepted") as refused:
        read_message(raw_message(plain, "application/json", headers), accept, None, verifier)
    mallory = make_pair(tmp_path / "m", "mallory")
    _, _, forged = security(mallory, mallory.cert).signer.dumps(PAYLOAD)
    with pytest.raises(MalformedMessage, match="refused: Unknown signer") as refused:
        read_message(raw_message(forged, SIGNED, headers), accept, None, verifier)
    assert (refused.value.task_id, refused.value.task_name) == ("abc", "t.add")
