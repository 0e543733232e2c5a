"""The prober's own HTTP/1.1 path: one connection per hub and pass, the probe's GETs one after another on it.

Why not httpx here: a pass over 5,000 hubs spent ≈ 2 ms of CPU per request in httpx/httpcore/anyio (the
pool scanned on every request, a cancel scope and a sniffio look-up per await), more than a core at a 30 s
interval. A probe needs little of a general client: GET a fixed path, read a status line, a few headers and
a small body. This module does just that on asyncio streams, defensively, since a hub (or what answers in its
place) may be hostile: the head and body are size-capped, every wait is under the caller's timeout, the
reason phrase is cleaned before it reaches an error message, and redirects are not followed.

The TLS certificate's expiry is read from the probe's own (verified) connection, so an https hub costs one
handshake per pass; only when verification fails is a second, unverified connection made to read it.
"""

from __future__ import annotations

import asyncio
import errno
import json
import re
import ssl
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

MAX_HEAD = 16 * 1024
"""Bytes of status line and headers accepted (JupyterHub sends well under 1 KiB)."""
MAX_BODY = 64 * 1024
"""Bytes of body read; a longer body is not JupyterHub's answer (its /hub/api/ body is ≈ 20 bytes): the
version is not read from it and the connection is not reused."""
USER_AGENT = "hubfleet-prober"
DIGITS = re.compile(r"[0-9]{1,18}")
HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")


class ProbeHTTPError(Exception):
    """A failure worth its own words in a probe's error (after "GET <path>: ")."""


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    body: bytes | None
    """The body when the caller asked for it and it fit in MAX_BODY, else None."""


@dataclass(frozen=True)
class Origin:
    """Where one hub's requests go: connect to `host`:`port` (with TLS when `tls`), naming `sni` in the
    handshake and `host_header` in each request; `prefix` is the URL's path (a hub served under a path)."""

    host: str
    port: int
    tls: bool
    sni: str
    host_header: str
    prefix: str


def origin(url: str, connect: str = "") -> Origin:
    """The Origin of a hub URL; `connect` ("HOST:PORT") connects there instead, keeping the URL's host as
    Host and SNI. Raises ValueError for a URL that is not http(s) with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL with a host: {url!r}")
    tls = parts.scheme == "https"
    default = 443 if tls else 80
    port = parts.port or default  # ValueError for a port out of range
    name = parts.hostname
    shown = f"[{name}]" if ":" in name else name
    host_header = shown if port == default else f"{shown}:{port}"
    host, connect_port = name, port
    if connect:
        host, _, text = connect.rpartition(":")
        host, connect_port = host.strip("[]"), int(text)
    return Origin(host, connect_port, tls, name, host_header, parts.path.rstrip("/"))


class Connection:
    """One HTTP/1.1 connection to a hub; `get` may be called again while `reusable`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host_header: str) -> None:
        self.reader = reader
        self.writer = writer
        self.host_header = host_header
        self.reusable = True

    @classmethod
    async def open(cls, where: Origin, context: ssl.SSLContext | None) -> Connection:
        reader, writer = await asyncio.open_connection(
            where.host,
            where.port,
            ssl=context if where.tls else None,
            server_hostname=where.sni if where.tls else None,
            limit=MAX_HEAD,
        )
        return cls(reader, writer, where.host_header)

    def peer_certificate(self) -> bytes | None:
        """The DER certificate the server presented (TLS only)."""
        ssl_object = self.writer.get_extra_info("ssl_object")
        return ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None

    def close(self) -> None:
        self.reusable = False
        self.writer.close()

    async def get(self, path: str, *, want_body: bool) -> Answer:
        """GET `path`; the body is returned when `want_body` (else read and dropped, to reuse the
        connection). Raises OSError/ssl.SSLError/ProbeHTTPError; on any error the connection is closed."""
        if not self.reusable:
            raise ProbeHTTPError("connection not reusable")
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {self.host_header}\r\nUser-Agent: {USER_AGENT}\r\n"
            "Accept: application/json\r\n\r\n"
        )
        try:
            self.writer.write(request.encode("ascii"))
            while True:  # 1xx answers are informational: the real one follows
                status, reason, headers, keep_alive = await self._head()
                if not 100 <= status < 200:
                    break
            body = await self._body(status, headers, keep_alive, want_body)
        except BaseException:
            self.close()
            raise
        if not keep_alive:
            self.close()
        return Answer(status, reason, body)

    async def _head(self) -> tuple[int, str, dict[str, str], bool]:
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise ProbeHTTPError(f"response head larger than {MAX_HEAD // 1024} KiB") from None
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                raise ProbeHTTPError("server disconnected in the middle of its answer") from None
            raise ProbeHTTPError("server disconnected without sending a response") from None
        lines = head[:-4].split(b"\r\n")
        status_line = lines[0].split(b" ", 2)
        if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1.") or not status_line[1].isdigit():
            raise ProbeHTTPError("not an HTTP/1.x response")
        status = int(status_line[1])
        if not 100 <= status <= 999:
            raise ProbeHTTPError("not an HTTP/1.x response")
        reason = _printable(status_line[2]) if len(status_line) == 3 else ""
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, colon, value = line.partition(b":")
            if not colon:
                raise ProbeHTTPError("malformed response header")
            key = name.strip().lower().decode("latin-1")
            text = value.strip().decode("latin-1")
            if key in headers and key == "content-length" and headers[key] != text:
                raise ProbeHTTPError("conflicting Content-Length headers")
            headers[key] = f"{headers[key]}, {text}" if key in headers and key != "content-length" else text
        tokens = {t.strip().lower() for t in headers.get("connection", "").split(",")}
        keep_alive = status_line[0] == b"HTTP/1.1" and "close" not in tokens
        return status, reason, headers, keep_alive

    async def _body(self, status: int, headers: dict[str, str], keep_alive: bool, want: bool) -> bytes | None:
        if status in (204, 304):
            return b"" if want else None
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return await self._chunked(want)
        length = headers.get("content-length")
        if length is not None:
            if not DIGITS.fullmatch(length):
                raise ProbeHTTPError("malformed Content-Length")
            size = int(length)
            if size > MAX_BODY:
                self.close()  # not worth reading: not the answer of a hub
                return None
            body = await self._exactly(size)
            return body if want else None
        # no length: the body runs to the end of the connection
        self.reusable = False
        chunks, total = [], 0
        while total <= MAX_BODY and (chunk := await self.reader.read(MAX_BODY + 1 - total)):
            chunks.append(chunk)
            total += len(chunk)
        body = b"".join(chunks)
        return body if want and len(body) <= MAX_BODY else None

    async def _chunked(self, want: bool) -> bytes | None:
        chunks, total = [], 0
        while True:
            line = await self._line()
            size_text = line.split(b";", 1)[0].strip()
            if not HEX.fullmatch(size_text):  # int() alone would take "-5", "1_0", " 5"
                raise ProbeHTTPError("malformed chunked body")
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > MAX_BODY:
                self.close()
                return None
            chunk = await self._exactly(size + 2)
            if chunk[-2:] != b"\r\n":
                raise ProbeHTTPError("malformed chunked body")
            chunks.append(chunk[:-2])
        while await self._line():  # trailers, up to the empty line
            pass
        return b"".join(chunks) if want else None

    async def _line(self) -> bytes:
        try:
            return (await self.reader.readuntil(b"\r\n"))[:-2]
        except asyncio.LimitOverrunError:
            raise ProbeHTTPError("malformed chunked body") from None
        except asyncio.IncompleteReadError:
            raise ProbeHTTPError("server disconnected in the middle of its answer") from None

    async def _exactly(self, size: int) -> bytes:
        try:
            return await self.reader.readexactly(size)
        except asyncio.IncompleteReadError:
            raise ProbeHTTPError("server disconnected in the middle of its answer") from None


def _refused(exc: BaseException) -> bool:
    """Connection refused, also when asyncio tried several addresses ("Multiple exceptions: ...")."""
    if isinstance(exc, ConnectionRefusedError):
        return True
    text = str(exc)
    if not isinstance(exc, OSError) or not text.startswith("Multiple exceptions"):
        return False
    codes = re.findall(r"\[Errno (\d+)\]", text)
    return bool(codes) and all(int(code) == errno.ECONNREFUSED for code in codes)


def _printable(raw: bytes) -> str:
    """A reason phrase fit for an error message: printable ASCII only, at most 80 characters."""
    text = raw.decode("latin-1")
    return "".join(c for c in text if " " <= c <= "~")[:80].strip()


def version_from_body(body: bytes | None) -> str | None:
    """{"version": "6.1.1"} of /hub/api/; None for any other body (a proxy's HTML page, bad JSON)."""
    if not body:
        return None
    try:
        found = json.loads(body)
    except (ValueError, RecursionError):  # bad JSON or encoding; "[[[[…" nested deeper than Python recurses
        return None
    version = found.get("version") if isinstance(found, dict) else None
    if not isinstance(version, str):
        return None
    shown = "".join(c for c in version[:40] if c.isprintable())  # no terminal escapes into tables and logs
    return shown or None


def not_after(der: bytes | None) -> datetime | None:
    """notAfter of a DER certificate (None when absent or unreadable)."""
    if not der:
        return None
    from cryptography import x509

    try:
        return x509.load_der_x509_certificate(der).not_valid_after_utc
    except ValueError:
        return None


def describe(exc: BaseException) -> str:
    """A probe error for its sample and incident: connection failures in the words the httpx-based prober
    used ("cannot connect (connection refused)", "ConnectError: …"), so that incident history stays
    comparable; a malformed answer in its own words."""
    if isinstance(exc, ProbeHTTPError):
        return str(exc)
    if _refused(exc):
        return "cannot connect (connection refused)"
    if isinstance(exc, ssl.SSLError | OSError):
        text = str(exc).splitlines()[0] if str(exc) else ""
        kind = "ConnectError" if not isinstance(exc, ConnectionResetError | BrokenPipeError) else "ReadError"
        return f"{kind}: {text}" if text else kind
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
