"""What stands between the network and the model: who may call (a token; the Host and Origin headers), how much may
be in flight (requests; open connections) and how long a client may take to send a request (its headers; its body).

A connection costs the server a socket and nothing else until its request has arrived, so connections are not what
is capped: requests in flight are (each may hold a body and a decode), and a connection that sends nothing, or its
headers or body too slowly, is closed (GuardedH11). When the sockets run short, the longest-idle connection makes
room for a new one, as nginx reuses keep-alive connections, so idle sockets cannot shut anyone out.

Refusals are told in one line per burst (Refusals): a flood of bad requests must not become a flood of log lines.
"""

import asyncio
import hmac
import ipaddress
import json
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
# on every answer; the page adds its Content-Security-Policy
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer")]
OPEN_PATHS = frozenset({"/", "/health"})  # no token needed: the page (it asks for the token) and liveness probes
UNCOUNTED_PATHS = frozenset({"/health"})  # answered at once; a health check must get through a full server
CLOSE = (b"connection", b"close")


class ApiError(Exception):
    """A request the server refuses: HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Access:
    """Who may call: the bearer token (None: anyone who reaches the port) and the host names accepted in Host and
    Origin headers besides loopback ones and IP addresses ("*": any)."""

    token: str | None = None
    hosts: frozenset = field(default_factory=frozenset)

    @classmethod
    def of(cls, token: str | None, host: str, allowed_hosts) -> "Access":
        names = {_bare(h) for h in allowed_hosts or ()}
        if host and not _is_wildcard(host):
            names.add(_bare(host))
        return cls(token or None, frozenset(n for n in names if n))

    def host_ok(self, value: str) -> bool:
        """A Host header names this server. DNS rebinding (a hostile name re-pointed at this machine, so that a page
        from it reads the answers) needs a host name; an IP address or a loopback name cannot be one."""
        name = _bare(value)
        return "*" in self.hosts or name in self.hosts or _is_local_name(name) or _is_ip(name)

    def origin_ok(self, origin: str, host: str) -> bool:
        """A browser's Origin header: the page itself, a page on this machine, or an allowed host. Any page on the
        web can make a browser POST multipart or text/plain here without a CORS preflight: its Origin tells."""
        if "*" in self.hosts:
            return True
        parts = urlsplit(origin)
        if not parts.hostname:  # "null": a sandboxed frame or a file:// page
            return False
        if parts.netloc.lower() == host.lower():
            return True
        name = parts.hostname.lower().rstrip(".")
        if name in self.hosts or _is_local_name(name):
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            return False

    def token_ok(self, authorization: str | None) -> bool:
        if self.token is None:
            return True
        scheme, _, given = (authorization or "").partition(" ")
        # the header as its bytes came (read as latin-1), against the token's UTF-8 bytes
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("latin-1"),
                                                                  self.token.encode())


def _bare(host: str) -> str:
    """`Name:port`, `[v6]:port` or `v6` -> the lower-case name or address, no port, brackets or final dot."""
    host = host.strip().lower()
    if host.startswith("["):
        host = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def _is_local_name(name: str) -> bool:
    return name in LOOPBACK_NAMES or name.endswith(".localhost")  # RFC 6761: never resolved through DNS


def _is_wildcard(host: str) -> bool:
    return _bare(host) in ("", "0.0.0.0", "::")


def is_loopback(host: str) -> bool:
    """Whether listening on `host` keeps the server to this machine."""
    name = _bare(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Refusals:
    """One log line per burst of refusals: the first after a quiet spell at once, then a count of what followed
    every `every` seconds while refusals go on. Called on the event loop."""

    def __init__(self, say, every: float = 10.0):
        self.say, self.every = say, every
        self.counts: Counter = Counter()
        self.last = -float("inf")
        self.timer = None

    def note(self, reason: str, detail: str = "") -> None:
        now = time.monotonic()
        if self.timer is None and now - self.last >= self.every:
            self.last = now
            self.say(f"refused a request: {detail or reason} (further refusals are counted in one line every "
                     f"{self.every:g} s)")
            return
        self.counts[reason] += 1
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.last + self.every - now, self.flush)

    def flush(self) -> None:
        """Say what was counted since the last line (also at shutdown)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.counts:
            return
        total, since = sum(self.counts.values()), time.monotonic() - self.last
        self.last = time.monotonic()
        what = ", ".join(f"{n:,} {reason}" for reason, n in self.counts.most_common())
        self.counts.clear()
        self.say(f"refused {total:,} more request{'s' if total > 1 else ''} in {since:.1f} s: {what}")


class QuietInvalidRequests(logging.Filter):
    """uvicorn logs a warning per malformed request; a burst of them is one line of Refusals instead."""

    def __init__(self, refusals: Refusals):
        super().__init__()
        self.refusals = refusals

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("Invalid HTTP request"):
            self.refusals.note("malformed HTTP requests", "a malformed HTTP request (answered 400)")
            return False
        return True


async def answer(send, status: int, message: str, headers=()) -> None:
    """A JSON error sent straight from the ASGI layer; the connection closes after it (the body may be unread)."""
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            CLOSE, *SECURITY_HEADERS, *headers]})
    await send({"type": "http.response.body", "body": body})


class Guard:
    """ASGI middleware in front of the app, in this order: the Host and Origin checks (403), the token (401), the
    body's announced size (413), the cap on requests in flight (503 with Retry-After); then, while the app runs, the
    body's size as it arrives (413) and its deadline (408). Every answer gets SECURITY_HEADERS, and `connection:
    close` when the request's body was not read to its end (so a refused upload does not keep its connection)."""

    def __init__(self, app, limits, access: Access, refusals: Refusals):
        self.app, self.limits, self.access, self.refusals = app, limits, access, refusals
        self.in_flight = 0

    def _refusal(self, scope, host, origin, authorization, length):
        """(status, message, reason for the log, extra headers) for a request refused before the app sees it."""
        if host is not None and not self.access.host_ok(host):
            return (403, f"Host '{shown(host)}' is not a name of this server (dlcli serve --allowed-host "
                         f"{shown(_bare(host))} adds it)", "with a foreign Host", ())
        if origin is not None and not self.access.origin_ok(origin, host or ""):
            return (403, f"cross-origin request from '{shown(origin)}' refused (dlcli serve --allowed-host adds "
                         f"a host)", "cross-origin", ())
        if scope["path"] not in OPEN_PATHS and not self.access.token_ok(authorization):
            return (401, "this server needs its token: send 'Authorization: Bearer TOKEN' (the token dlcli serve "
                         "was given with --token or DLCLI_SERVE_TOKEN)" if authorization is None else
                         "wrong token in the Authorization header", "without the right token",
                    ((b"www-authenticate", b"Bearer"),))
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                return (400, "Content-Length is not a number", "malformed", ())
            if size > self.limits.max_bytes:
                return (413, f"the request body ({size:,} bytes) is over this server's limit of "
                             f"{self.limits.max_bytes:,} bytes (--max-bytes)", "over --max-bytes", ())
        return None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        host = origin = authorization = length = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        refused = self._refusal(scope, host, origin, authorization, length)
        if refused is not None:
            status, message, reason, headers = refused
            if status != 413:  # an upload too big is the client's mistake, not an attack to report
                self.refusals.note(reason, f"{status} {message}")
            return await answer(send, status, message, headers)
        counted = scope["path"] not in UNCOUNTED_PATHS
        if counted:
            if self.in_flight >= self.limits.max_in_flight:
                message = (f"{self.limits.max_in_flight} requests in flight, the most this server takes "
                           "(--max-in-flight): retry in a moment")
                self.refusals.note("over --max-in-flight", f"503 {message}")
                return await answer(send, 503, message, ((b"retry-after", b"1"),))
            self.in_flight += 1
        body = {"done": not chunked and length in (None, b"0"), "seen": 0}
        deadline = asyncio.get_running_loop().time() + self.limits.body_timeout
        limits = self.limits

        async def guarded_receive():
            if body["done"]:  # after the body: a wait for the client to leave, which needs no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                self.refusals.note("with a slow body", f"408 a body still arriving after {limits.body_timeout:g} s")
                raise ApiError(408, f"the request body did not arrive within {limits.body_timeout:g} s "
                                    "(--body-timeout)") from None
            if message["type"] == "http.request":
                body["seen"] += len(message.get("body", b""))
                if body["seen"] > limits.max_bytes:
                    raise ApiError(413, f"the request body is over this server's limit of {limits.max_bytes:,} "
                                        "bytes (--max-bytes)")
                if not message.get("more_body", False):
                    body["done"] = True
            return message

        async def guarded_send(message):
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), *SECURITY_HEADERS]
                if not body["done"]:
                    headers.append(CLOSE)
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, guarded_receive, guarded_send)
        finally:
            if counted:
                self.in_flight -= 1


def shown(text: str, limit: int = 80) -> str:
    """A value from the request, as an answer may quote it: printable, and cut short (answers do not echo inputs)."""
    text = "".join(c if c.isprintable() else "?" for c in text[: limit + 1])
    return text if len(text) <= limit else text[: limit - 3] + "..."


def guarded_protocol(limits, refusals: Refusals):
    """uvicorn's h11 protocol with deadlines: a request's headers must arrive within limits.header_timeout of the
    connection opening (or of the previous answer), its body within limits.body_timeout of its headers (the app
    answers 408 first; this closes what the app never reads); and, over limits.max_connections open connections, the
    one idle the longest is closed to make room. uvicorn has a keep-alive timeout but none for a request that never
    completes, and its limit_concurrency counts connections: idle sockets shut everyone out."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    timeout_body = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                    b"content-length: %d\r\n\r\n%s")

    class GuardedH11(H11Protocol):
        phase = "head"  # head: waiting for a request's headers; body: reading its body; work: answering; closing
        since = 0.0
        timer = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._enter("head")
            if len(self.connections) > limits.max_connections:
                self._make_room()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._follow()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._follow()

        def connection_lost(self, exc) -> None:
            self._enter("closing")
            super().connection_lost(exc)

        def _follow(self) -> None:
            state = self.conn.their_state
            phase = "head" if state is h11.IDLE else "body" if state is h11.SEND_BODY else "work"
            if phase != self.phase and self.phase != "closing":
                self._enter(phase)

        def _enter(self, phase: str) -> None:
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            self.phase, self.since = phase, self.loop.time()
            if phase == "head":
                self.timer = self.loop.call_later(limits.header_timeout, self._expired)
            elif phase == "body":  # a moment after the app's own 408
                self.timer = self.loop.call_later(limits.body_timeout + 1.0, self._expired)

        def _expired(self) -> None:
            self.timer = None
            if self.transport.is_closing():
                return
            if self.phase == "head":
                if self.conn.trailing_data[0]:  # part of a request's headers came, and then too little
                    message = f"the request's headers did not arrive within {limits.header_timeout:g} s"
                    refusals.note("with slow headers", f"408 {message}")
                    body = json.dumps({"error": message + " (--header-timeout)"}).encode()
                    self.transport.write(timeout_body % (len(body), body))
                # else an idle connection: closing it is routine
            elif self.phase == "body":
                refusals.note("with a slow body", "a body the app did not read, closed after --body-timeout")
            else:
                return
            self._enter("closing")
            self.transport.close()

        def _make_room(self) -> None:
            """Close the connection idle the longest (this one, if every other is busy with a request)."""
            idle = [c for c in self.connections if getattr(c, "phase", None) == "head"]
            if sum(getattr(c, "phase", None) != "closing" for c in self.connections) <= limits.max_connections:
                return
            victim = min(idle, key=lambda c: c.since) if idle else self
            refusals.note("over the open connections' limit (closed the longest idle)",
                          f"{len(self.connections)} open connections: closed the one idle the longest")
            victim._enter("closing")
            victim.transport.close()

    return GuardedH11
