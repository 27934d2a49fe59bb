"""Where a webhook may be sent (SSRF protection) and the HTTP POST itself.

A destination is refused when any address its host resolves to is not a public unicast address:
loopback, private (RFC 1918, unique-local), link-local (169.254.0.0/16 with the cloud metadata
service 169.254.169.254, fe80::/10), shared, reserved, unspecified or multicast. The check runs at
registration and again at every delivery after DNS resolution, and the delivery connects to the
very address it checked (TLS still verifies the certificate against the host name), so a DNS answer
that changes between the check and the connection (DNS rebinding) cannot redirect it. Redirects
are never followed. settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS=true lifts the address check (for
development and tests).
"""

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from django.conf import settings

EXCERPT_BYTES = 1000


class DestinationRefused(Exception):
    """The URL may not be called; the message says why (it names no secret)."""


@dataclass(frozen=True)
class Destination:
    scheme: str
    host: str
    port: int
    path: str  # with the query
    address: str  # the resolved, checked IP address the connection goes to


@dataclass(frozen=True)
class Response:
    status_code: int
    excerpt: str


def check_url_shape(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise DestinationRefused("must be an http or https URL")
    if not parts.hostname:
        raise DestinationRefused("must name a host")
    if parts.username or parts.password:
        raise DestinationRefused("must not carry a user name or password")
    try:
        port = parts.port  # raises on a port out of range
    except ValueError as exc:
        raise DestinationRefused("has an invalid port") from exc
    if port == 0:  # would silently become the scheme's default port
        raise DestinationRefused("has an invalid port")


def refused_address(address: str) -> str | None:
    """Why this IP address may not be called, or None."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        # An IPv4 address inside an IPv6 one (mapped, 6to4, Teredo) is judged as that IPv4 address.
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo and ip.teredo[1])
        if embedded is not None:
            ip = embedded
    for kind, flag in (
        ("loopback", ip.is_loopback),
        ("unspecified", ip.is_unspecified),
        ("link-local (cloud metadata)", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("not public", not ip.is_global),
    ):
        if flag:
            return f"resolves to {address}, a {kind} address"
    return None


def resolve(url: str) -> Destination:
    """The URL's destination, checked (DestinationRefused otherwise)."""
    check_url_shape(url)
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise DestinationRefused(f"host {parts.hostname!r} does not resolve") from exc
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise DestinationRefused(f"host {parts.hostname!r} does not resolve")
    if not settings.WEBHOOKS_ALLOW_PRIVATE_NETWORKS:
        for address in addresses:  # every address: the resolver may answer another one next time
            reason = refused_address(address)
            if reason:
                raise DestinationRefused(reason)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    # The request line is ASCII: a non-ASCII path (a URLField accepts "/hook/é") is percent-encoded
    # as a browser would, what is already ASCII is left as it is.
    path = quote(path, safe="".join(chr(c) for c in range(0x21, 0x7F)))
    return Destination(parts.scheme, parts.hostname, port, path, addresses[0])


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, destination: Destination, timeout: float):
        super().__init__(destination.host, destination.port, timeout=timeout)
        self._address = destination.address

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, destination: Destination, timeout: float):
        super().__init__(
            destination.host, destination.port, timeout=timeout, context=ssl.create_default_context()
        )
        self._address = destination.address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def post(destination: Destination, body: bytes, headers: dict[str, str], timeout: float) -> Response:
    """POST body; the status and the first EXCERPT_BYTES of the answer. Raises TimeoutError
    (socket.timeout) or OSError (refused, reset, TLS) like the socket does.

    `timeout` bounds the whole exchange, not each read: a receiver that trickles its answer a byte
    at a time, each within the timeout, is hung up on when the time is up (a watchdog shuts the
    socket down) instead of holding a sender thread and its lease for as long as it likes."""
    kind = _PinnedHTTPSConnection if destination.scheme == "https" else _PinnedHTTPConnection
    connection = kind(destination, timeout)
    timed_out = threading.Event()

    def hang_up():
        timed_out.set()
        sock = connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    watchdog = threading.Timer(timeout, hang_up)
    watchdog.daemon = True
    watchdog.start()
    try:
        try:
            connection.request("POST", destination.path, body=body, headers=headers)
            answer = connection.getresponse()
            excerpt = answer.read(EXCERPT_BYTES)
        except (OSError, http.client.HTTPException) as exc:
            if timed_out.is_set():
                raise TimeoutError("timed out") from exc
            raise
        if timed_out.is_set():
            raise TimeoutError("timed out")
        return Response(answer.status, excerpt.decode("utf-8", errors="replace"))
    finally:
        watchdog.cancel()
        connection.close()
