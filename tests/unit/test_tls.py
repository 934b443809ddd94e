"""HTTPS over an SSH channel, against a real local TLS server: a throwaway CA and certificates
made with `cryptography`, a Python ssl server on 127.0.0.1, and a fake channel around a real
socket (a paramiko Channel is not a socket; the fake is not one either)."""

from __future__ import annotations

import contextlib
import http.server
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paramiko
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from portable_deploy import tls
from portable_deploy.config import TlsConfig
from portable_deploy.host import Host, Target
from portable_deploy.verify import tls_problem

NAME = "scoreboard.test"
NOW = datetime.now(UTC).replace(microsecond=0)


# --- a throwaway PKI ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


def make_ca(common_name: str) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(days=1))
        .not_valid_after(NOW + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def _leaf(
    issuer: Issued | None, names: list[str], not_before: datetime, not_after: datetime
) -> Issued:
    """A server certificate for NAMES signed by ISSUER (self-signed when None)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.cert.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
    return Issued(builder.sign(issuer.key if issuer else key, hashes.SHA256()), key)


@dataclass(frozen=True)
class Pki:
    ca_file: Path
    valid: Issued
    expired: Issued
    not_yet: Issued
    wrong_name: Issued
    foreign: Issued
    self_signed: Issued


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A test CA (its PEM in ca.pem) and the server certificates the tests present."""
    ca, other_ca = make_ca("portable-deploy test CA"), make_ca("someone else's CA")
    ca_file = tmp_path_factory.mktemp("pki") / "ca.pem"
    ca_file.write_bytes(ca.pem())
    return Pki(
        ca_file=ca_file,
        valid=_leaf(ca, [NAME, "www." + NAME], NOW - timedelta(days=1), NOW + timedelta(days=89)),
        expired=_leaf(ca, [NAME], NOW - timedelta(days=90), NOW - timedelta(days=3)),
        not_yet=_leaf(ca, [NAME], NOW + timedelta(days=2), NOW + timedelta(days=90)),
        wrong_name=_leaf(
            ca, ["a.example", "b.example"], NOW - timedelta(days=1), NOW + timedelta(days=30)
        ),
        foreign=_leaf(other_ca, [NAME], NOW - timedelta(days=1), NOW + timedelta(days=30)),
        self_signed=_leaf(None, [NAME], NOW - timedelta(days=1), NOW + timedelta(days=30)),
    )


# --- a real TLS server and a channel that is not a socket ------------------------------------------


@dataclass
class Seen:
    """What the server saw: the SNI of each handshake, the Host header of each request."""

    sni: list[str | None] = field(default_factory=list)
    hosts: list[str | None] = field(default_factory=list)


@contextlib.contextmanager
def serve(cert: Issued, tmp_path: Path, *, refuse: bool = False) -> Iterator[tuple[int, Seen]]:
    """An HTTPS server on 127.0.0.1 presenting CERT (REFUSE: every handshake gets an alert)."""
    (tmp_path / "cert.pem").write_bytes(cert.pem())
    (tmp_path / "key.pem").write_bytes(cert.key_pem())
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    seen = Seen()

    def sni(
        sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, ctx: ssl.SSLContext
    ) -> int | None:
        seen.sni.append(name)
        return ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE if refuse else None

    context.sni_callback = sni

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.hosts.append(self.headers.get("Host"))
            body = b"ok" if self.path == "/healthz" else b"not found"
            self.send_response(200 if self.path == "/healthz" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


class FakeChannel:
    """What a paramiko Channel offers (sendall, recv, settimeout, close) around a real socket."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def recv(self, nbytes: int) -> bytes:
        return self.sock.recv(nbytes)

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def close(self) -> None:
        self.sock.close()


def get(port: int, context: ssl.SSLContext, path: str = "/healthz") -> tls.Answer:
    return tls.https_get(lambda: FakeChannel(port), NAME, path, context, timeout=5)


# --- the transport ---------------------------------------------------------------------------------


def test_a_valid_certificate_gives_status_body_and_its_facts(pki: Pki, tmp_path: Path) -> None:
    """A certificate from the trusted CA for the name: status, body, notAfter and names."""
    with serve(pki.valid, tmp_path) as (port, _):
        answer = get(port, tls.client_context(pki.ca_file))
    assert answer == tls.Answer(
        200,
        "ok",
        tls.Certificate((NAME, "www." + NAME), NOW - timedelta(days=1), NOW + timedelta(days=89)),
    )


def test_sni_and_host_header_are_the_name(pki: Pki, tmp_path: Path) -> None:
    """The server sees NAME as SNI and as the Host header, not 127.0.0.1."""
    with serve(pki.valid, tmp_path) as (port, seen):
        get(port, tls.client_context(pki.ca_file))
    assert (seen.sni, seen.hosts) == ([NAME], [NAME])


def test_another_path_answers_its_own_status(pki: Pki, tmp_path: Path) -> None:
    """The path is sent as given: /missing is the server's 404, over a verified connection."""
    with serve(pki.valid, tmp_path) as (port, _):
        answer = get(port, tls.client_context(pki.ca_file), "/missing")
    assert (answer.status, answer.body, answer.failure) == (404, "not found", None)


def test_a_certificate_for_other_names_fails_and_says_which(pki: Pki, tmp_path: Path) -> None:
    """Trusted but for a.example and b.example: WRONG_NAME, with the names it is for."""
    with serve(pki.wrong_name, tmp_path) as (port, _):
        answer = get(port, tls.client_context(pki.ca_file))
    assert (answer.status, answer.failure) == (0, tls.Failure.WRONG_NAME)
    assert answer.certificate is not None
    assert answer.certificate.names == ("a.example", "b.example")
    assert "scoreboard.test" in answer.detail


@pytest.mark.parametrize("which", ["foreign", "self_signed"])
def test_a_certificate_from_an_unknown_ca_is_untrusted(
    pki: Pki, tmp_path: Path, which: str
) -> None:
    """Signed by a CA not in ca_file, or by itself: UNTRUSTED, the certificate still described."""
    issued: Issued = getattr(pki, which)
    with serve(issued, tmp_path) as (port, _):
        answer = get(port, tls.client_context(pki.ca_file))
    assert (answer.status, answer.failure) == (0, tls.Failure.UNTRUSTED)
    assert answer.certificate is not None and answer.certificate.names == (NAME,)


def test_the_system_store_does_not_trust_a_test_ca(pki: Pki, tmp_path: Path) -> None:
    """Without ca_file, a certificate of the throwaway CA is untrusted."""
    with serve(pki.valid, tmp_path) as (port, _):
        answer = get(port, tls.client_context())
    assert answer.failure is tls.Failure.UNTRUSTED


def test_an_expired_certificate_fails_with_its_date(pki: Pki, tmp_path: Path) -> None:
    """notAfter in the past: EXPIRED, and the certificate's notAfter for the message."""
    with serve(pki.expired, tmp_path) as (port, _):
        answer = get(port, tls.client_context(pki.ca_file))
    assert (answer.status, answer.failure) == (0, tls.Failure.EXPIRED)
    assert answer.certificate is not None
    assert answer.certificate.not_after == NOW - timedelta(days=3)


def test_a_certificate_not_yet_valid_fails(pki: Pki, tmp_path: Path) -> None:
    """notBefore in the future: NOT_YET_VALID, with its notBefore."""
    with serve(pki.not_yet, tmp_path) as (port, _):
        answer = get(port, tls.client_context(pki.ca_file))
    assert answer.failure is tls.Failure.NOT_YET_VALID
    assert answer.certificate is not None
    assert answer.certificate.not_before == NOW + timedelta(days=2)


def test_a_refused_handshake_is_a_handshake_failure(pki: Pki, tmp_path: Path) -> None:
    """The server answers the ClientHello with an alert (no certificate for the name yet)."""
    with serve(pki.valid, tmp_path, refuse=True) as (port, _):
        answer = get(port, tls.client_context(pki.ca_file))
    assert (answer.status, answer.failure, answer.certificate) == (0, tls.Failure.HANDSHAKE, None)
    assert "HANDSHAKE_FAILURE" in answer.detail.upper()


def test_a_server_that_closes_at_once_is_a_handshake_failure() -> None:
    """A port that accepts and closes without TLS: HANDSHAKE, not an exception."""
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def close_each() -> None:
            with contextlib.suppress(OSError):
                conn, _ = listener.accept()
                conn.close()

        thread = threading.Thread(target=close_each, daemon=True)
        thread.start()
        answer = get(listener.getsockname()[1], tls.client_context())
        thread.join(5)
    assert (answer.status, answer.failure) == (0, tls.Failure.HANDSHAKE)


def test_a_plain_http_server_is_a_handshake_failure() -> None:
    """TLS spoken to a port that speaks plain HTTP: HANDSHAKE with ssl's reason."""

    class Plain(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Plain)
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    try:
        answer = get(server.server_address[1], tls.client_context())
    finally:
        server.shutdown()
        server.server_close()
    assert (answer.status, answer.failure) == (0, tls.Failure.HANDSHAKE)


def test_an_unreachable_port_is_an_answer_without_tls() -> None:
    """Connect raising Unreachable: status 0 with its reason, no TLS failure."""

    def refuse() -> tls.Stream:
        raise tls.Unreachable("cannot connect to 127.0.0.1:443 on the host (Connect failed)")

    answer = tls.https_get(refuse, NAME, "/healthz", tls.client_context())
    assert answer == tls.Answer(
        detail="cannot connect to 127.0.0.1:443 on the host (Connect failed)"
    )


def test_a_server_that_never_answers_times_out_as_a_handshake_failure() -> None:
    """A silent server: the handshake gives up after the timeout, as a HANDSHAKE failure."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        answer = tls.https_get(
            lambda: FakeChannel(listener.getsockname()[1]),
            NAME,
            "/healthz",
            tls.client_context(),
            timeout=0.2,
        )
    assert (answer.failure, answer.detail) == (tls.Failure.HANDSHAKE, "timed out")


def test_days_left_are_whole_days_rounded_down() -> None:
    """89 days and 23 hours left is 89 days; an expired certificate has negative days."""
    cert = tls.Certificate((NAME,), NOW, NOW + timedelta(days=89, hours=23))
    assert cert.days_left(NOW) == 89
    assert cert.days_left(NOW + timedelta(days=91)) == -2


# --- through Host: the channel is opened per request, the context built once ----------------------


class Transport:
    """A paramiko Transport whose direct-tcpip channels are sockets to 127.0.0.1:PORT."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.opened: list[tuple[str, int]] = []

    def is_active(self) -> bool:
        return True

    def open_channel(self, kind: str, dest: tuple[str, int], *args: object, **kw: object) -> object:
        assert kind == "direct-tcpip"
        self.opened.append(dest)
        if self.refuse:
            raise paramiko.ChannelException(2, "Connect failed")
        return FakeChannel(dest[1])


def host_with(transport: Transport, echoed: list[str]) -> Host:
    host = Host(Target("prod", "203.0.113.9"), echo=lambda h, line, dry: echoed.append(line))
    host._conn = type("Conn", (), {"transport": transport, "close": lambda self: None})()
    return host


def test_host_https_get_goes_through_a_channel_to_the_port(pki: Pki, tmp_path: Path) -> None:
    """Host.https_get opens a direct-tcpip channel to 127.0.0.1:PORT and echoes the URL."""
    transport, echoed = Transport(), []
    host = host_with(transport, echoed)
    with serve(pki.valid, tmp_path) as (port, _):
        answer = host.https_get(port, "/healthz", NAME, pki.ca_file)
        host.https_get(port, "/healthz", NAME, pki.ca_file)
    assert (answer.status, answer.failure) == (200, None)
    assert transport.opened == [("127.0.0.1", port)] * 2
    assert echoed == [f"GET https://{NAME}:{port}/healthz  (through SSH)"] * 2
    assert list(host._tls_contexts) == [pki.ca_file]  # loaded once for both requests


def test_host_https_get_on_a_refused_port_is_an_answer(pki: Pki) -> None:
    """A refused direct-tcpip channel: status 0 with why, the connection is kept."""
    host = host_with(Transport(refuse=True), [])
    answer = host.https_get(443, "/healthz", NAME, pki.ca_file)
    assert answer == tls.Answer(
        detail="cannot connect to 127.0.0.1:443 on the host (ChannelException(2, 'Connect failed'))"
    )
    assert host._conn is not None


# --- the words verify uses for a refused connection ------------------------------------------------

TLS_CFG = TlsConfig(name=NAME)


@pytest.mark.parametrize(
    ("answer", "line"),
    [
        (
            tls.Answer(
                certificate=tls.Certificate(
                    (NAME,), NOW + timedelta(days=2), NOW + timedelta(days=90)
                ),
                failure=tls.Failure.NOT_YET_VALID,
            ),
            f"certificate for {NAME} on 127.0.0.1:443 is not valid before "
            f"{NOW + timedelta(days=2):%Y-%m-%d %H:%M} UTC (is this machine's clock right?)",
        ),
        (
            tls.Answer(
                certificate=tls.Certificate((NAME,), NOW, NOW + timedelta(days=90)),
                failure=tls.Failure.EXPIRED,
                detail="certificate has expired",
            ),
            f"certificate for {NAME} on 127.0.0.1:443 failed verification: certificate has expired",
        ),
        (
            tls.Answer(failure=tls.Failure.WRONG_NAME, detail="Hostname mismatch"),
            f"certificate on 127.0.0.1:443 is not valid for {NAME} (it is for: ?)",
        ),
        (
            tls.Answer(failure=tls.Failure.INVALID, detail="certificate revoked"),
            f"certificate for {NAME} on 127.0.0.1:443 failed verification: certificate revoked",
        ),
    ],
    ids=["not-yet-valid", "expired-in-chain", "wrong-name-unread", "invalid"],
)
def test_the_line_for_a_refused_certificate(answer: tls.Answer, line: str) -> None:
    """Not yet valid, an expired CA (the leaf is not), an unreadable certificate, another error."""
    assert tls_problem(TLS_CFG, answer, NOW) == line
