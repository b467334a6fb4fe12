"""dlcli.serve.guard on its own: the access rules, the ASGI middleware in front of a toy app, the refusal log lines,
and the h11 protocol's deadlines on a real socket. No model and no torch (tools/mutation.py runs this file without
the conftest against every planted bug in the module); tests/test_serve_hardening.py covers the same through
`dlcli serve`."""

import asyncio
import json
import logging
import socket
import threading
import time
from types import SimpleNamespace

import pytest

pytest.importorskip("uvicorn", reason='the serve extra is not installed: pip install -e ".[dev]"')

from dlcli.serve import guard  # noqa: E402
from dlcli.serve.guard import (CLOSE, SECURITY_HEADERS, Access, ApiError, Guard, QuietInvalidRequests,  # noqa: E402
                               Refusals, answer, is_loopback, shown)

TOKEN = "s3cret-token"


# ---------------------------------------------------------------- the rules


def test_bare_names_lose_port_brackets_case_and_final_dot():
    for value, bare in (("Models.Example.:8000", "models.example"), ("[::1]:8000", "::1"), ("[FE80::1]", "fe80::1"),
                        ("::1", "::1"), (" host ", "host"), ("10.1.2.3:80", "10.1.2.3"), ("name", "name"),
                        ("name.", "name"), ("", "")):
        assert guard._bare(value) == bare, value


def test_wildcards_loopback_and_ips():
    for host in ("", "0.0.0.0", "::", "[::]:80", "0.0.0.0:8000"):
        assert guard._is_wildcard(host), host
    for host in ("127.0.0.1", "localhost", "::1", "example.com"):
        assert not guard._is_wildcard(host), host
    for host in ("localhost", "LOCALHOST", "127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost:80"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "10.0.0.1", "::", "example.com", "localhost.example", ""):
        assert not is_loopback(host), host
    assert guard._is_ip("10.1.2.3") and guard._is_ip("::1") and not guard._is_ip("host") and not guard._is_ip("")
    for name in ("localhost", "127.0.0.1", "::1", "app.localhost"):
        assert guard._is_local_name(name), name
    for name in ("xlocalhost", "localhost.evil", "127.0.0.2", "localhostx"):
        assert not guard._is_local_name(name), name


def test_access_of_collects_the_names_it_allows():
    access = Access.of("", "0.0.0.0", None)
    assert access.token is None and access.hosts == frozenset()
    assert Access.of(TOKEN, "::", ["A.Example.:80", "", "[fe80::1]"]) == Access(TOKEN, frozenset({"a.example",
                                                                                               "fe80::1"}))
    assert Access.of(None, "MyBox.lan:8000", []).hosts == frozenset({"mybox.lan"})  # the listening name counts
    assert Access.of(None, "mybox.lan", ["*"]).hosts == frozenset({"mybox.lan", "*"})


def test_host_and_origin_rules():
    access = Access.of(None, "127.0.0.1", ["models.example"])
    assert access.host_ok("models.example:80") and access.host_ok("10.9.8.7") and access.host_ok("app.localhost")
    assert not access.host_ok("evil.example") and not access.host_ok("models.example.evil")
    anyone = Access.of(None, "0.0.0.0", ["*"])
    assert anyone.host_ok("evil.example") and anyone.origin_ok("null", "") and anyone.origin_ok("https://e.x", "")
    # the page itself: Origin's host and port equal the Host header (any case), whatever its name
    assert access.origin_ok("http://MyBox.lan:8000", "mybox.lan:8000")
    assert not access.origin_ok("http://mybox.lan:8001", "mybox.lan:8000")
    assert access.origin_ok("https://models.example.", "x") and access.origin_ok("https://Models.Example:9", "x")
    assert access.origin_ok("http://127.0.0.2:3000", "x") and access.origin_ok("http://[::1]:3000", "x")
    assert access.origin_ok("http://app.localhost", "x")
    for origin in ("null", "file://", "http://10.1.2.3", "http://[fe80::1]", "https://evil.example",
                   "http://localhost.evil"):
        assert not access.origin_ok(origin, "127.0.0.1:8000"), origin


def test_the_token_counts_only_whole_and_under_bearer():
    access = Access.of(TOKEN, "127.0.0.1", [])
    for header, ok in ((f"Bearer {TOKEN}", True), (f"bearer {TOKEN}", True), (f"BEARER  {TOKEN} ", True),
                       (TOKEN, False), (f"Basic {TOKEN}", False), (f"Bearer {TOKEN}x", False),
                       (f"Bearer {TOKEN[:-1]}", False), ("Bearer ", False), ("", False), (None, False)):
        assert access.token_ok(header) is ok, header
    assert Access.of(None, "127.0.0.1", []).token_ok(None) and Access.of(None, "127.0.0.1", []).token_ok("junk")
    # a non-ASCII token: the header's bytes (read as latin-1) against the token's UTF-8 bytes
    unicode = Access.of("tökén", "127.0.0.1", [])
    assert unicode.token_ok("Bearer " + "tökén".encode().decode("latin-1"))
    assert not unicode.token_ok("Bearer tökén")


def test_shown_quotes_printably_and_short():
    assert shown("a\nb\x00c") == "a?b?c"
    assert shown("x" * 80) == "x" * 80
    assert shown("x" * 81) == "x" * 77 + "..." and len(shown("y" * 500)) == 80
    assert shown("abcdefgh", limit=5) == "ab..." and shown("abcde", limit=5) == "abcde"


# ---------------------------------------------------------------- the log lines


def test_refusals_say_the_first_at_once_then_count_a_burst_in_one_line():
    said = []

    async def scenario():
        refusals = Refusals(said.append, every=0.3)
        refusals.note("cross-origin", "403 the first one")
        assert said == ["refused a request: 403 the first one (further refusals are counted in one line every "
                        "0.3 s)"]
        for reason in ("a", "b", "b", "b"):
            refusals.note(reason)
        assert len(said) == 1 and refusals.timer is not None
        started = time.monotonic()
        await asyncio.sleep(0.15)
        assert len(said) == 1  # the burst's line waits for the end of its `every`
        while len(said) == 1 and time.monotonic() - started < 5:
            await asyncio.sleep(0.02)
        assert said[1].startswith("refused 4 more requests in 0.") and said[1].endswith(" s: 3 b, 1 a"), said
        assert refusals.timer is None and not refusals.counts
        refusals.note("c")  # within `every` of the last line: counted, not said
        assert len(said) == 2
        refusals.flush()  # at shutdown
        assert len(said) == 3 and said[2].startswith("refused 1 more request in ") and said[2].endswith(": 1 c")
        refusals.flush()
        assert len(said) == 3  # nothing counted: nothing said
        await asyncio.sleep(0.35)
        refusals.note("d", "")  # after a quiet spell: said at once, with the reason when there is no detail
        assert said[3].startswith("refused a request: d (") and refusals.timer is None

    asyncio.run(scenario())


def test_refusals_by_the_clock(monkeypatch):
    """A fake clock: a quiet spell of exactly `every` seconds makes the next refusal a line of its own; two counted
    refusals are "2 more requests"."""
    now = [100.0]
    monkeypatch.setattr(guard.time, "monotonic", lambda: now[0])
    said = []

    async def scenario():
        refusals = Refusals(said.append, every=10)
        refusals.note("a")
        now[0] = 110.0
        refusals.note("b")
        assert len(said) == 2 and said[1].startswith("refused a request: b (") and refusals.timer is None
        now[0] = 112.5
        refusals.note("c")
        refusals.note("c")
        assert len(said) == 2 and refusals.timer is not None
        now[0] = 119.0
        refusals.flush()
        assert said[2] == "refused 2 more requests in 9.0 s: 2 c" and refusals.last == 119.0

    asyncio.run(scenario())


def test_a_note_with_no_detail_and_no_event_loop_for_the_first():
    said = []
    Refusals(said.append).note("over --max-bytes")  # the first note needs no running loop
    assert said == ["refused a request: over --max-bytes (further refusals are counted in one line every 10 s)"]


def test_uvicorns_invalid_request_warnings_become_refusals():
    said = []
    quiet = QuietInvalidRequests(Refusals(said.append))

    def record(message):
        return logging.LogRecord("uvicorn.error", logging.WARNING, __file__, 1, message, None, None)

    assert quiet.filter(record("Invalid HTTP request received.")) is False
    assert said == ["refused a request: a malformed HTTP request (answered 400) (further refusals are counted in "
                    "one line every 10 s)"]
    assert quiet.filter(record("Started server process")) is True and len(said) == 1


# ---------------------------------------------------------------- the middleware


class Sent:
    """What an ASGI app sent: status, headers (a list of pairs) and body."""

    def __init__(self):
        self.messages = []

    async def __call__(self, message):
        self.messages.append(message)

    @property
    def status(self):
        return self.messages[0]["status"]

    @property
    def headers(self):
        return list(self.messages[0]["headers"])

    @property
    def json(self):
        return json.loads(b"".join(m.get("body", b"") for m in self.messages[1:]))


def test_answer_is_one_json_line_that_closes_the_connection():
    sent = Sent()
    asyncio.run(answer(sent, 418, "no tea", [(b"x-extra", b"1")]))
    assert sent.status == 418 and sent.json == {"error": "no tea"}
    body = sent.messages[1]["body"]
    assert sent.messages[0]["type"] == "http.response.start" and sent.messages[1]["type"] == "http.response.body"
    assert sent.headers == [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            CLOSE, *SECURITY_HEADERS, (b"x-extra", b"1")]
    assert CLOSE == (b"connection", b"close") and dict(SECURITY_HEADERS) == {
        b"x-content-type-options": b"nosniff", b"x-frame-options": b"DENY", b"referrer-policy": b"no-referrer"}


def limits(**over):
    return SimpleNamespace(**{"max_bytes": 100, "max_in_flight": 2, "body_timeout": 0.3, **over})


class App:
    """A toy ASGI app: reads the body if asked (what it got, or the ApiError raised), waits for `gate`, answers 200."""

    def __init__(self, read=True, gate=None, fail=False, read_again=False):
        self.read, self.gate, self.fail, self.read_again = read, gate, fail, read_again
        self.calls, self.bodies, self.errors, self.after = [], [], [], []

    async def __call__(self, scope, receive, send):
        self.calls.append(scope)
        if scope["type"] != "http":
            return
        if self.read:
            body = b""
            try:
                while True:
                    message = await receive()
                    body += message.get("body", b"")
                    if not message.get("more_body", False):
                        break
            except ApiError as e:
                self.errors.append(e)
                return await answer(send, e.status, e.message)
            self.bodies.append(body)
            if self.read_again:  # after the body: uvicorn's wait for the client to go
                self.after.append(await receive())
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise RuntimeError("the app failed")
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})


def request(path="/predict", headers=(), method="POST"):
    return {"type": "http", "path": path, "method": method,
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers]}


def receiver(*chunks, then=None, complete=True, delay=0.0):
    """An ASGI receive giving `chunks` (more_body on all but the last, or on all if not `complete`; each after
    `delay` seconds), then waiting `then` seconds for a disconnect. A chunk that is a dict is the message itself."""
    queue = list(chunks)

    async def receive():
        if queue:
            if delay:
                await asyncio.sleep(delay)
            body = queue.pop(0)
            if isinstance(body, dict):
                return body
            return {"type": "http.request", "body": body, "more_body": bool(queue) or not complete}
        await asyncio.sleep(then if then is not None else 3600)
        return {"type": "http.disconnect"}

    return receive


def call(middleware, scope, receive=None):
    sent = Sent()
    asyncio.run(middleware(scope, receive or receiver(b""), sent))
    return sent


def make(app, token=TOKEN, hosts=("models.example",), **over):
    said = []
    middleware = Guard(app, limits(**over), Access.of(token, "127.0.0.1", list(hosts)), Refusals(said.append))
    return middleware, said


AUTH = ("Authorization", f"Bearer {TOKEN}")


def test_requests_refused_before_the_app_sees_them():
    app = App()
    middleware, said = make(app)
    sent = call(middleware, request(headers=[("Host", "evil.example:80"), AUTH]))
    assert sent.status == 403 and sent.json["error"] == ("Host 'evil.example:80' is not a name of this server "
                                                         "(dlcli serve --allowed-host evil.example adds it)")
    assert said[-1].startswith("refused a request: 403 Host 'evil.example:80'")
    sent = call(middleware, request(headers=[("Host", "models.example"), ("Origin", "https://evil.example"), AUTH]))
    assert sent.status == 403 and sent.json["error"].startswith("cross-origin request from 'https://evil.example'")
    # no Host header (HTTP/1.0): an Origin can match no Host then
    assert call(middleware, request(headers=[("Origin", "http://x"), AUTH])).status == 403
    sent = call(middleware, request(headers=[("Host", "127.0.0.1:8000")]))
    assert sent.status == 401 and sent.json["error"].startswith("this server needs its token: send 'Authorization:")
    assert (b"www-authenticate", b"Bearer") in sent.headers
    sent = call(middleware, request(headers=[("Authorization", "Bearer nope")]))
    assert sent.status == 401 and sent.json["error"] == "wrong token in the Authorization header"
    sent = call(middleware, request(headers=[AUTH, ("Content-Length", "12x")]))
    assert sent.status == 400 and sent.json["error"] == "Content-Length is not a number"
    # the first refusal was said; the others, within 10 s of it, are counted for the burst's line
    assert dict(middleware.refusals.counts) == {"cross-origin": 2, "without the right token": 2, "malformed": 1}
    sent = call(middleware, request(headers=[AUTH, ("Content-Length", "101")]))
    assert sent.status == 413 and sent.json["error"] == ("the request body (101 bytes) is over this server's limit "
                                                         "of 100 bytes (--max-bytes)")
    assert sum(middleware.refusals.counts.values()) == 5 and len(said) == 1  # a big upload is not a refusal to log
    assert app.calls == [] and middleware.in_flight == 0


def test_requests_let_through():
    app = App()
    middleware, said = make(app)
    # the page and the health check need no token; a request without a Host header (HTTP/1.0) has no name to check
    for path in ("/", "/health"):
        assert call(middleware, request(path, method="GET")).status == 200
    sent = call(middleware, request(headers=[AUTH, ("Content-Length", "100"), ("Host", "models.example")]),
                receiver(b"x" * 100))
    assert sent.status == 200 and app.bodies[-1] == b"x" * 100  # exactly --max-bytes
    sent = call(middleware, request(headers=[AUTH, ("Origin", "http://127.0.0.1:8000"), ("Host", "127.0.0.1:8000")]))
    assert sent.status == 200 and said == [] and middleware.in_flight == 0
    # the page itself, reached by an address that is no allowed name: its Origin is its Host
    assert call(middleware, request(headers=[AUTH, ("Origin", "http://10.1.2.3:8000"), ("Host", "10.1.2.3:8000")]),
                ).status == 200
    # every answer carries the security headers; the body was read, so the connection may stay open
    assert sent.headers == [(b"content-type", b"text/plain"), *SECURITY_HEADERS]
    assert sent.messages[1] == {"type": "http.response.body", "body": b"ok"}
    # a lifespan event goes straight through
    calls = len(app.calls)
    asyncio.run(middleware({"type": "lifespan"}, receiver(), Sent()))
    assert app.calls[calls]["type"] == "lifespan"


def test_an_unread_body_closes_the_connection_after_the_answer():
    middleware, _ = make(App(read=False), token=None)
    sent = call(middleware, request(headers=[("Content-Length", "5")]), receiver(b"abcde"))
    assert sent.status == 200 and sent.headers[-1] == CLOSE
    sent = call(middleware, request(headers=[("Transfer-Encoding", "chunked")]), receiver(b"abcde"))
    assert sent.headers[-1] == CLOSE
    for headers in ([], [("Content-Length", "0")]):  # no body: nothing left unread
        assert CLOSE not in call(middleware, request(headers=headers)).headers


def test_a_body_over_the_limit_as_it_arrives_is_413():
    app = App()
    middleware, _ = make(app, token=None)
    sent = call(middleware, request(headers=[("Transfer-Encoding", "chunked")]), receiver(b"x" * 60, b"y" * 41))
    assert sent.status == 413 and app.errors[-1].message == ("the request body is over this server's limit of 100 "
                                                             "bytes (--max-bytes)")
    sent = call(middleware, request(headers=[("Transfer-Encoding", "chunked")]),
                receiver(b"x" * 60, b"y" * 40, delay=0.02))  # a body that takes a moment is within its deadline
    assert sent.status == 200 and app.bodies[-1] == b"x" * 60 + b"y" * 40
    assert CLOSE not in sent.headers  # read to its end
    # ASGI lets a message leave out body (b"") and more_body (False)
    sent = call(middleware, request(headers=[("Transfer-Encoding", "chunked")]),
                receiver({"type": "http.request", "body": b"z" * 100, "more_body": True}, {"type": "http.request"}))
    assert sent.status == 200 and app.bodies[-1] == b"z" * 100 and CLOSE not in sent.headers


def test_a_slow_body_is_408_and_a_read_after_the_body_has_no_deadline():
    app = App(read_again=True)
    middleware, said = make(app, token=None, body_timeout=0.2)
    started = time.monotonic()
    sent = call(middleware, request(headers=[("Content-Length", "10")]),
                receiver(b"abc", b"def", then=3600, complete=False))
    assert sent.status == 408 and time.monotonic() - started < 2
    assert app.errors[-1].message == "the request body did not arrive within 0.2 s (--body-timeout)"
    assert said == ["refused a request: 408 a body still arriving after 0.2 s (further refusals are counted in one "
                    "line every 10 s)"]
    # whole body at once, then the app waits for the client to leave: longer than body_timeout, and no 408
    sent = call(middleware, request(headers=[("Content-Length", "3")]), receiver(b"abc", then=0.4))
    assert sent.status == 200 and app.after[-1] == {"type": "http.disconnect"}
    sent = call(middleware, request(), receiver(then=0.4))  # no body at all
    assert sent.status == 200 and app.after[-1] == {"type": "http.disconnect"}


def test_requests_in_flight_are_capped_but_health_checks_are_not():
    async def scenario():
        gate = asyncio.Event()
        app = App(read=False, gate=gate)
        middleware, said = make(app, token=None, max_in_flight=2)
        first, second = Sent(), Sent()
        running = [asyncio.create_task(middleware(request(), receiver(), s)) for s in (first, second)]
        await asyncio.sleep(0.05)
        assert middleware.in_flight == 2
        third = Sent()
        await asyncio.wait_for(middleware(request(), receiver(), third), 5)  # refused at once, not queued
        assert third.status == 503 and (b"retry-after", b"1") in third.headers
        assert third.json["error"] == ("2 requests in flight, the most this server takes (--max-in-flight): retry "
                                       "in a moment")
        assert said[-1].startswith("refused a request: 503 2 requests in flight")
        health = Sent()
        waiting = asyncio.create_task(middleware(request("/health", method="GET"), receiver(), health))
        await asyncio.sleep(0.05)
        assert middleware.in_flight == 2  # a health check is not counted
        gate.set()
        await asyncio.gather(*running, waiting)
        assert first.status == second.status == health.status == 200 and middleware.in_flight == 0
        failing, _ = make(App(read=False, fail=True), token=None)
        with pytest.raises(RuntimeError):
            await failing(request(), receiver(), Sent())
        assert failing.in_flight == 0  # given back when the app fails too

    asyncio.run(scenario())


# ---------------------------------------------------------------- the protocol's deadlines, on a real socket


class Served:
    """uvicorn with guard's protocol in a thread, in front of a toy app (HEAD / answers at once; GET /slow after
    `slow` seconds)."""

    def __init__(self, **over):
        import uvicorn

        self.limits = SimpleNamespace(**{"header_timeout": 0.5, "body_timeout": 0.3, "max_connections": 1000,
                                         **over})
        self.said = []
        self.refusals = Refusals(self.said.append, every=0.01)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, http=guard.guarded_protocol(self.limits, self.refusals),
                                log_level="critical", access_log=False, lifespan="off", interface="asgi3",
                                timeout_graceful_shutdown=0.5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started

    async def app(self, scope, receive, send):
        if scope["path"] == "/slow":
            await asyncio.sleep(float(dict(scope["headers"]).get(b"x-wait", b"1")))
        if scope["path"] == "/read":
            while (await receive()).get("more_body"):
                pass
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    def connect(self):
        return socket.create_connection(("127.0.0.1", self.port), timeout=5)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def served(request):
    server = Served(**getattr(request, "param", {}))
    yield server
    server.stop()


def answered(sock) -> bytes:
    """The status line of the toy app's next answer (read to its 2-byte body)."""
    sock.settimeout(5)
    data = b""
    while not data.endswith(b"\r\n\r\nok"):
        chunk = sock.recv(4096)
        assert chunk, data
        data += chunk
    return data.partition(b"\r\n")[0]


def closed_within(sock, seconds) -> bytes | None:
    """What the server sent before it closed the socket within `seconds`; None if the socket stayed open."""
    sock.settimeout(seconds)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, socket.timeout):
        return None
    except OSError:
        pass
    return data


def test_a_silent_connection_closes_after_the_header_timeout_without_a_word(served):
    started = time.monotonic()
    sock = served.connect()
    assert closed_within(sock, 5) == b"" and 0.4 < time.monotonic() - started < 4
    assert served.said == []  # an idle connection closing is routine


def test_headers_that_stop_coming_get_408(served):
    sock = served.connect()
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    data = closed_within(sock, 5)
    assert data.startswith(b"HTTP/1.1 408 Request Timeout\r\n") and b"connection: close" in data
    head, _, body = data.partition(b"\r\n\r\n")
    assert json.loads(body) == {"error": "the request's headers did not arrive within 0.5 s (--header-timeout)"}
    assert f"content-length: {len(body)}".encode() in head
    assert served.said[0].startswith("refused a request: 408 the request's headers did not arrive")


def test_headers_that_trickle_in_get_408_at_the_deadline_all_the_same(served):
    """Slowloris: a byte of header every 0.1 s does not restart the clock of the headers' deadline."""
    sock = served.connect()
    started = time.monotonic()
    for byte in b"GET / HTTP/1.1\r\nHost: example.test\r\nX-Slow: 1":
        try:
            sock.sendall(bytes([byte]))
        except OSError:  # closed: the deadline passed
            break
        time.sleep(0.1)
    data = closed_within(sock, 5)
    assert data is not None and data.startswith(b"HTTP/1.1 408") and time.monotonic() - started < 3.5


def test_keep_alive_connections_answer_then_idle_out(served):
    sock = served.connect()
    for _ in range(2):
        time.sleep(0.3)  # within the header timeout each time: the timer restarts after each answer
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answered(sock) == b"HTTP/1.1 200 OK"
    started = time.monotonic()
    assert closed_within(sock, 5) == b"" and time.monotonic() - started > 0.35


def test_a_slow_answer_is_not_cut_by_the_header_timeout(served):
    sock = served.connect()
    sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\nx-wait: 1.2\r\n\r\n")
    assert answered(sock) == b"HTTP/1.1 200 OK"


def test_a_body_the_app_never_reads_is_closed_after_the_body_timeout(served):
    sock = served.connect()
    sock.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\nx-wait: 4\r\nContent-Length: 10\r\n\r\nabc")
    started = time.monotonic()
    assert closed_within(sock, 6) is not None and 1.1 < time.monotonic() - started < 5  # body_timeout + 1 s
    assert any("a body the app did not read" in line for line in served.said), served.said


def test_a_body_that_arrives_is_answered(served):
    sock = served.connect()
    sock.sendall(b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nabc")
    time.sleep(0.2)
    sock.sendall(b"def")
    assert answered(sock) == b"HTTP/1.1 200 OK"


@pytest.mark.parametrize("served", [{"max_connections": 2, "header_timeout": 20}], indirect=True)
def test_over_the_connection_limit_the_longest_idle_makes_room(served):
    first = served.connect()
    time.sleep(0.1)
    second = served.connect()
    time.sleep(0.1)
    third = served.connect()
    assert closed_within(first, 2) == b""  # the longest idle
    assert closed_within(second, 0.3) is None and closed_within(third, 0.3) is None
    assert any("open connections: closed the one idle the longest" in line for line in served.said), served.said
    for sock in (second, third):
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answered(sock) == b"HTTP/1.1 200 OK"


@pytest.mark.parametrize("served", [{"max_connections": 1, "header_timeout": 20}], indirect=True)
def test_over_the_limit_with_every_other_connection_busy_the_new_one_is_closed(served):
    busy = served.connect()
    busy.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\nx-wait: 1.5\r\n\r\n")
    time.sleep(0.3)
    late = served.connect()
    assert closed_within(late, 2) == b""
    assert answered(busy) == b"HTTP/1.1 200 OK"
