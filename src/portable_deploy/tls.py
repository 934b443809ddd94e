"""HTTPS over a byte stream that is not a socket: an SSH ``direct-tcpip`` channel.

Python's ssl cannot wrap a paramiko Channel, so TLS runs in memory (``ssl.MemoryBIO`` and an
``SSLObject``) and this module pumps its records over the channel, in the caller's thread: no
helper thread, no socketpair, and a dead channel or a timeout surfaces right where it happens.
Python's ssl does all the checking (trust store or CA file, ``check_hostname``); this module only
reports what it found in a form verify can word: the certificate's facts, or why it failed.
"""

from __future__ import annotations

import functools
import http.client
import io
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol, TypeVar

_T = TypeVar("_T")

#: Bytes of the body kept (the plain HTTP check keeps as many).
BODY_MAX = 4096


class Stream(Protocol):
    """What TLS needs from a connection: a paramiko Channel has these, so has a socket."""

    def sendall(self, data: bytes) -> object: ...

    def recv(self, nbytes: int) -> bytes: ...

    def settimeout(self, timeout: float | None) -> object: ...

    def close(self) -> object: ...


class Unreachable(Exception):
    """The port could not be reached (refused): an answer to report, not a broken connection."""


#: Opens a new stream to the server for each request; raises Unreachable for a closed port.
Connect = Callable[[], Stream]


class Failure(StrEnum):
    """Why the TLS connection was not made; verify words each one."""

    UNTRUSTED = "untrusted"
    WRONG_NAME = "wrong-name"
    EXPIRED = "expired"
    NOT_YET_VALID = "not-yet-valid"
    #: Another certificate verification error (revoked, bad signature, ...): ssl's words tell.
    INVALID = "invalid"
    #: No handshake: an alert (no certificate for this name yet), a closed connection, not TLS.
    HANDSHAKE = "handshake"


#: OpenSSL's X509_V_ERR_* codes that ssl.SSLCertVerificationError carries in verify_code.
_VERIFY_CODES: dict[int, Failure] = {
    2: Failure.UNTRUSTED,  # unable to get issuer certificate
    9: Failure.NOT_YET_VALID,
    10: Failure.EXPIRED,
    18: Failure.UNTRUSTED,  # self-signed certificate
    19: Failure.UNTRUSTED,  # self-signed certificate in certificate chain
    20: Failure.UNTRUSTED,  # unable to get local issuer certificate
    21: Failure.UNTRUSTED,  # unable to verify the first certificate
    62: Failure.WRONG_NAME,  # hostname mismatch
}


@dataclass(frozen=True)
class Certificate:
    """The facts verify reports about the server's certificate."""

    #: The DNS names it is valid for (subjectAltName; the subject's CN when it has none).
    names: tuple[str, ...]
    not_before: datetime
    not_after: datetime

    def days_left(self, now: datetime) -> int:
        """Whole days until it expires (negative once expired)."""
        return (self.not_after - now).days

    @classmethod
    def from_der(cls, der: bytes) -> Certificate:
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        cert = x509.load_der_x509_certificate(der)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = tuple(str(n) for n in san.get_values_for_type(x509.DNSName))
        except x509.ExtensionNotFound:
            names = ()
        if not names:
            cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            names = tuple(str(a.value) for a in cn)
        return cls(names, cert.not_valid_before_utc, cert.not_valid_after_utc)


@dataclass(frozen=True)
class Answer:
    """What one HTTPS GET found."""

    #: HTTP status; 0 when there was no HTTP answer (see ``failure`` and ``detail``).
    status: int = 0
    body: str = ""
    #: The server's certificate: verified when ``failure`` is None, else as it was presented
    #: (read again without verification, for the message only; None if that failed too).
    certificate: Certificate | None = None
    failure: Failure | None = None
    #: ssl's own words for the failure, or why there was no HTTP answer.
    detail: str = ""


def client_context(ca_file: Path | None = None) -> ssl.SSLContext:
    """Python's default client context: certificate and host name checked, TLS 1.2 or newer;
    trusting only CA_FILE's certificates when given, else the system's trust store."""
    return ssl.create_default_context(cafile=None if ca_file is None else str(ca_file))


def _unverified_context() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class _Tls:
    """An SSLObject over a Stream, with the two socket methods http.client uses."""

    def __init__(self, stream: Stream, context: ssl.SSLContext, name: str, deadline: float) -> None:
        self._stream = stream
        self._incoming, self._outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=name)
        self._deadline = deadline

    def _pump(self, operation: Callable[[], _T]) -> _T:
        """Run OPERATION, sending what TLS wrote and feeding it what arrives until it completes."""
        while True:
            try:
                result = operation()
            except ssl.SSLWantReadError:
                self._flush()
                if self._incoming.eof:  # cannot happen: ssl raises SSLEOFError first
                    raise ssl.SSLEOFError("connection closed") from None
                self._fill()
                continue
            self._flush()
            return result

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self._stream.sendall(data)

    def _fill(self) -> None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out")
        self._stream.settimeout(left)
        data = self._stream.recv(65536)
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    def handshake(self) -> None:
        self._pump(self.tls.do_handshake)

    def peer_der(self) -> bytes | None:
        return self.tls.getpeercert(binary_form=True)

    def read(self, size: int) -> bytes:
        try:
            return self._pump(functools.partial(self.tls.read, size))
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            # The end of the response: servers told "Connection: close" often skip close_notify.
            return b""

    # -- what http.client.HTTPConnection and HTTPResponse call on their "socket" -----------------
    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self._pump(functools.partial(self.tls.write, view))
            view = view[written:]

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(_Reader(self))

    def close(self) -> None:
        pass  # the stream is closed by whoever opened it


class _Reader(io.RawIOBase):
    def __init__(self, tls: _Tls) -> None:
        self._tls = tls

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._tls.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _detail(error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return str(error.verify_message or error.reason or error)
    if isinstance(error, ssl.SSLError):
        return str(error.reason or error.strerror or error)
    return " ".join(str(error).split()) or type(error).__name__


def https_get(
    connect: Connect, name: str, path: str, context: ssl.SSLContext, timeout: float = 5.0
) -> Answer:
    """GET https://NAME/PATH over a stream from CONNECT, with SNI and Host set to NAME.

    A certificate ssl refuses is read a second time, over a new stream and without verification,
    to say what it is (its names and dates); nothing else is done with it.
    """
    try:
        stream = connect()
    except Unreachable as e:
        return Answer(detail=str(e))
    deadline = time.monotonic() + timeout
    try:
        tls = _Tls(stream, context, name, deadline)
        try:
            tls.handshake()
        except ssl.SSLCertVerificationError as e:
            failure = _VERIFY_CODES.get(e.verify_code, Failure.INVALID)
            stream.close()
            return Answer(
                certificate=presented(connect, name, timeout), failure=failure, detail=_detail(e)
            )
        except (ssl.SSLError, OSError) as e:  # an alert, a closed connection, a timeout
            return Answer(failure=Failure.HANDSHAKE, detail=_detail(e))
        der = tls.peer_der()
        certificate = Certificate.from_der(der) if der else None
        conn = http.client.HTTPConnection(name, timeout=timeout)
        conn.sock = tls
        try:
            conn.request("GET", path, headers={"Host": name, "Connection": "close"})
            response = conn.getresponse()
            body = response.read(BODY_MAX).decode(errors="replace")
        except (OSError, http.client.HTTPException) as e:
            return Answer(certificate=certificate, detail=f"{type(e).__name__}: {_detail(e)}")
        return Answer(int(response.status), body, certificate)
    finally:
        stream.close()


def presented(connect: Connect, name: str, timeout: float = 5.0) -> Certificate | None:
    """The certificate the server presents for NAME, unverified; None when there is none."""
    try:
        stream = connect()
    except Unreachable:
        return None
    try:
        tls = _Tls(stream, _unverified_context(), name, time.monotonic() + timeout)
        tls.handshake()
        der = tls.peer_der()
        return Certificate.from_der(der) if der else None
    except (ssl.SSLError, OSError, ValueError):
        return None
    finally:
        stream.close()
