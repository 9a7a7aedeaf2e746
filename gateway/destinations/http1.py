"""HTTP/1.1 on the wire for the outbound client: a destination's URL parsed once into where
to connect and what to send, a request encoded as bytes, and a response parsed as its bytes
arrive. Pure: no I/O (destinations/client.py does it).

Why our own: deliveries are one small POST after another to a few fixed origins, and
aiohttp's client spent about 200 us of CPU on each (bench/RESULTS.md, issue 15, fifth
pass): more than its server side spends answering one. What a delivery needs is small:
keep-alive, Content-Length or chunked or close-delimited answers, 1xx skipped, no redirects,
no cookies, no compression, no proxies. Everything else a peer may send is either ignored
safely or refused as a `BadResponse` (a retryable failure of the attempt).
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import quote, unquote, urlsplit

#: the longest status line plus headers we read before giving up on a peer
MAX_HEAD = 64 * 1024
#: the longest chunk-size line or trailer section
MAX_LINE = 8 * 1024
#: a body longer than this is not read to its end: the connection is closed instead (reading
#: megabytes to keep one connection would cost more than opening a new one)
MAX_DRAIN = 256 * 1024


class InvalidTarget(ValueError):
    """The configured URL cannot be sent to; no retry can fix it."""


class InvalidHeader(ValueError):
    """A header name or value that would break the request's framing."""


class BadResponse(Exception):
    """The peer's answer is not HTTP/1.1 we can read."""


class ConnectionDropped(ConnectionError):
    """The connection ended before the answer was complete. `received`: whether any byte of
    the answer had arrived (none, on a reused connection, is the stale keep-alive race)."""

    def __init__(self, received: bool) -> None:
        super().__init__("the peer closed the connection before answering in full")
        self.received = received


class ConnectFailed(ConnectionError):
    """No connection could be opened; `os_error` says why (refused, unreachable, TLS)."""

    def __init__(self, os_error: OSError) -> None:
        super().__init__(os_error.strerror or str(os_error) or type(os_error).__name__)
        self.os_error = os_error


class Reply(NamedTuple):
    status: int
    #: header names in lower case; a repeated header's values joined by ", "
    headers: Mapping[str, str]
    #: the first `keep` bytes of the body
    body: bytes


@dataclass(frozen=True, slots=True)
class Target:
    tls: bool
    host: str  # to connect to: IDNA-encoded, an IPv6 address without brackets
    port: int
    authority: str  # the Host header
    #: the request target: path and query, percent-encoded (a Slack URL's token is in it)
    path: str = field(repr=False)
    #: Basic credentials from the URL's userinfo
    authorization: str | None = field(repr=False)

    @property
    def origin(self) -> tuple[bool, str, int]:
        return self.tls, self.host, self.port


_DEFAULT_PORTS = {"http": 80, "https": 443}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PATH_SAFE = "/%!$&'()*+,;=:@-._~"
_QUERY_SAFE = _PATH_SAFE + "?"
#: a % that does not start an escape: sent as %25, as yarl (aiohttp's URLs) did
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")


def _quoted(text: str, safe: str) -> str:
    """Percent-encode what a request target cannot hold, keeping escapes already there."""
    return quote(_STRAY_PERCENT.sub("%25", text), safe=safe)


@functools.lru_cache(maxsize=256)
def parse_target(url: str) -> Target:
    """Where to connect and what request line to send, from a destination's URL. Messages
    never quote the URL: it may be a credential."""
    if _CONTROL.search(url.strip()):
        raise InvalidTarget("the URL holds control characters")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
        host = parts.hostname or ""
        username, password = parts.username, parts.password
    except ValueError:
        raise InvalidTarget("the URL's host or port is not valid") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise InvalidTarget("the URL must start with http:// or https://")
    if not host:
        raise InvalidTarget("the URL has no host")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise InvalidTarget("the URL's host is not a valid domain name") from None
    authority = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        authority += f":{port}"
    path = _quoted(parts.path or "/", _PATH_SAFE)
    if parts.query:
        path += "?" + _quoted(parts.query, _QUERY_SAFE)
    authorization = None
    if username is not None:
        pair = f"{unquote(username)}:{unquote(password or '')}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode("ascii")
    return Target(
        tls=scheme == "https",
        host=host,
        port=port or _DEFAULT_PORTS[scheme],
        authority=authority,
        path=path,
        authorization=authorization,
    )


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_BAD_VALUE = re.compile(r"[\x00\r\n]")
#: framing is the client's alone: a configured header cannot override it
_FRAMING = frozenset({"content-length", "transfer-encoding", "connection"})


def encode_request(method: str, target: Target, headers: Mapping[str, str], body: bytes) -> bytes:
    """One request with a Content-Length body. A configured Host or Authorization header
    wins over the URL's; Content-Length, Transfer-Encoding and Connection are ours."""
    if not _TOKEN.fullmatch(method):
        raise InvalidHeader("the method is not a valid HTTP token")
    host = target.authority
    authorization = target.authorization
    accept = "Accept: */*\r\n"
    lines = []
    for name, value in headers.items():
        if not _TOKEN.fullmatch(name):
            raise InvalidHeader(f"header name {name!r} is not a valid HTTP token")
        if _BAD_VALUE.search(value):
            raise InvalidHeader(f"header {name} holds a line break or NUL")
        lower = name.lower()
        if lower == "host":
            host = value
        elif lower not in _FRAMING:
            if lower == "authorization":
                authorization = None
            elif lower == "accept":
                accept = ""
            lines.append(f"{name}: {value}\r\n")
    if authorization is not None:
        lines.append(f"Authorization: {authorization}\r\n")
    head = (
        f"{method} {target.path} HTTP/1.1\r\nHost: {host}\r\n{accept}"
        f"{''.join(lines)}Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


#: a header line after the status line: a token, a colon, the value up to the line's end
_HEADER_LINE = re.compile(r"\r\n([!#$%&'*+\-.^_`|~0-9A-Za-z]+):([^\r\n]*)")


def _merged(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Headers with repeated names: values joined by ", " (two different Content-Lengths
    are refused: which one frames the body is the peer's secret)."""
    headers: dict[str, str] = {}
    for name, value in pairs:
        name = name.lower()
        value = value.strip(" \t")
        if name not in headers:
            headers[name] = value
        elif name == "content-length":
            if headers[name] != value:
                raise BadResponse("the answer has two different Content-Length headers")
        else:
            headers[name] = f"{headers[name]}, {value}"
    return headers


# parser states
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILER, _UNTIL_CLOSE, _DONE = range(8)


class ResponseParser:
    """One response, fed its bytes as they arrive. `feed` and `end` return True once
    the exchange is over: the whole response read, or enough of it (past MAX_DRAIN the
    rest is not read and the connection cannot carry another request). 1xx answers before
    the real one are skipped."""

    __slots__ = (
        "_buffer",
        "_keep",
        "_kept",
        "_read",
        "_remaining",
        "_state",
        "_trailer",
        "head_only",
        "headers",
        "received",
        "reusable",
        "status",
    )

    def __init__(self, keep: int, head_only: bool = False) -> None:
        self._keep = keep
        self._kept = b""
        self._read = 0  # body bytes read so far
        self._remaining = 0
        self._buffer = b""
        self._state = _HEAD
        self._trailer = 0  # bytes of trailer lines read
        self.head_only = head_only  # the answer to HEAD has no body whatever it says
        self.status = 0
        self.headers: dict[str, str] = {}
        self.received = False  # any byte at all: a reused connection was not stale
        self.reusable = False  # complete, framed, and the peer keeps the connection open

    @property
    def body(self) -> bytes:
        return self._kept

    def feed(self, data: bytes) -> bool:
        if self._state == _DONE:
            if data:  # bytes after the answer: the stream is out of step
                self.reusable = False
            return True
        if data:
            self.received = True
        buffer = self._buffer + data if self._buffer else data
        self._buffer = b""
        while True:
            state = self._state
            if state == _DONE:
                if buffer:
                    self.reusable = False
                return True
            if self._read > MAX_DRAIN:
                self.reusable = False
                self._state = _DONE
                return True
            if state == _HEAD:
                end = buffer.find(b"\r\n\r\n")
                if end < 0 or end > MAX_HEAD:
                    self._hold(buffer, MAX_HEAD, "the answer's headers are too long")
                    return False
                buffer = self._head(buffer[:end], buffer[end + 4 :])
            elif state in (_LENGTH, _CHUNK_DATA):
                if not buffer:
                    return False
                taken = buffer[: self._remaining]
                self._take(taken)
                self._remaining -= len(taken)
                buffer = buffer[len(taken) :]
                if not self._remaining:
                    self._state = _DONE if state == _LENGTH else _CHUNK_END
            elif state == _UNTIL_CLOSE:
                self._take(buffer)
                buffer = b""
                if self._read <= MAX_DRAIN:
                    return False
            elif state == _CHUNK_SIZE:
                end = buffer.find(b"\r\n")
                if end < 0:
                    self._hold(buffer, MAX_LINE, "a chunk-size line is too long")
                    return False
                size = buffer[:end].split(b";", 1)[0].strip()
                if not size or len(size) > 15 or size.strip(b"0123456789abcdefABCDEF"):
                    raise BadResponse("a chunk size is not hexadecimal")
                self._remaining = int(size, 16)
                self._state = _CHUNK_DATA if self._remaining else _TRAILER
                buffer = buffer[end + 2 :]
            elif state == _CHUNK_END:
                if len(buffer) < 2:
                    self._buffer = buffer
                    return False
                if buffer[:2] != b"\r\n":
                    raise BadResponse("a chunk does not end with CRLF")
                buffer = buffer[2:]
                self._state = _CHUNK_SIZE
            else:  # _TRAILER: header lines after the last chunk, up to an empty one
                end = buffer.find(b"\r\n")
                if end < 0:
                    self._hold(buffer, MAX_LINE, "the trailer is too long")
                    return False
                self._trailer += end + 2
                if self._trailer > MAX_LINE:
                    raise BadResponse("the trailer is too long")
                if end == 0:
                    self._state = _DONE
                buffer = buffer[end + 2 :]

    def end(self) -> bool:
        """The exchange ends here: the peer closed the connection, or the deadline came.
        True: the answer counts, because its status line and headers arrived (the receiver
        has decided; a body framed by the close is complete, any other is cut short and
        the connection is not reused). False: no answer."""
        if self._state == _DONE:
            return True
        if not self.status:
            return False
        self.reusable = False
        self._state = _DONE
        return True

    def _take(self, data: bytes) -> None:
        self._read += len(data)
        room = self._keep - len(self._kept)
        if room > 0:
            self._kept += data[:room]

    def _hold(self, buffer: bytes, limit: int, problem: str) -> None:
        if len(buffer) > limit:
            raise BadResponse(problem)
        self._buffer = buffer

    def _head(self, head: bytes, rest: bytes) -> bytes:
        """Parse a status line and its headers; what follows them back."""
        text = head.decode("latin-1")
        version = text[:8]
        code = text[9:12]
        if (
            version not in ("HTTP/1.1", "HTTP/1.0")
            or text[8:9] != " "
            or not (code.isascii() and code.isdigit())
            or text[12:13] not in ("", " ", "\r")
        ):
            raise BadResponse("the answer does not start with an HTTP/1.x status line")
        status = int(code)
        if not 100 <= status <= 599:
            raise BadResponse("the answer's status is not a status code")
        # one match per header line: a line that does not match, or a CR or LF alone, leaves
        # the counts apart
        pairs = _HEADER_LINE.findall(text)
        if not len(pairs) == text.count("\n") == text.count("\r"):
            raise BadResponse("the answer holds a malformed header line")
        headers = {name.lower(): value.strip(" \t") for name, value in pairs}
        if len(headers) != len(pairs):
            headers = _merged(pairs)
        if 100 <= status < 200:
            if status == 101:
                raise BadResponse("the peer switched protocols")
            return rest  # an interim answer: the real one follows
        self.status = status
        self.headers = headers
        connection = headers.get("connection")
        if connection is None:
            keep_alive = version == "HTTP/1.1"
        else:
            tokens = {t.strip().lower() for t in connection.split(",")}
            keep_alive = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens
        if self.head_only or status in (204, 304):
            self.reusable = keep_alive
            self._state = _DONE
            return rest
        coding = headers.get("transfer-encoding")
        if coding is not None:
            if coding.rsplit(",", 1)[-1].strip().lower() == "chunked":
                # with a Content-Length too, the peer's framing is in doubt (RFC 9112 6.3):
                # read the chunks, then let the connection go
                self.reusable = keep_alive and "content-length" not in headers
                self._state = _CHUNK_SIZE
            else:
                self._state = _UNTIL_CLOSE
            return rest
        length = headers.get("content-length")
        if length is None:
            self._state = _UNTIL_CLOSE
            return rest
        if not (length.isascii() and length.isdigit()):
            values = {item.strip() for item in length.split(",")}  # "5, 5" is 5
            length = values.pop()
            if values or not (length.isascii() and length.isdigit()):
                raise BadResponse("the answer's Content-Length is not a number")
        if len(length) > 15:  # past a petabyte, and int() refuses 4,300 digits
            raise BadResponse("the answer's Content-Length is not a plausible length")
        self._remaining = int(length)
        self.reusable = keep_alive
        self._state = _LENGTH if self._remaining else _DONE
        return rest
