"""`dlcli serve` attacked as a hostile client would, on a loopback port: idle and slow connections, a flood of
requests, pixel bombs and an ICO, JSON and CSV bodies built to be costly or odd (deep nesting, thousands of digits,
infinities, 110,000 unknown columns, a column twice), foreign Host and Origin headers, tokens, and what every answer
carries. Each server runs `dlcli serve RUN --port 0` as typed, in a process of its own; memory is that process's, read
from /proc."""

import contextlib
import http.client
import io
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from PIL import Image

from tests.conftest import tiny_config
from tests.test_evaluate_predict import cli, ok
from tests.test_tables import CONFIGS, write_table

pytest.importorskip("fastapi", reason='the serve extra is not installed: pip install -e ".[dev]"')

import dlcli  # noqa: E402

TOKEN = "s3cret-token"
SOURCE = str(os.path.dirname(os.path.dirname(os.path.abspath(dlcli.__file__))))  # the servers run the tested code
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An image run (an MLP on 3 x 16 x 16 synthetic images) and a table run (x1, x2, color), trained in seconds."""
    root = tmp_path_factory.mktemp("hardening")
    (root / "image.yaml").write_text(json.dumps(tiny_config(
        name="image", data={"dataset": "synthetic", "val_split": 0.2, "shape": [3, 16, 16], "num_classes": 3,
                            "train_samples": 120, "test_samples": 30}, train={"epochs": 1, "batch_size": 32})))
    table = write_table(root / "table.csv", n=120)
    trained = {}
    for kind, args in (("image", [root / "image.yaml"]),
                       ("table", [CONFIGS / "table_csv.yaml", "--set", f"data.train_file={table}", "--set",
                                  "train.epochs=1"])):
        result = ok("train", *args, "--runs-dir", root / "runs", "--quiet")
        trained[kind] = root / "runs" / result.stdout.strip().splitlines()[-1]
    return trained


class Server:
    """`dlcli serve` in a process of its own: its URL, port and pid, and every line it printed (read as they come,
    so that the pipe never fills)."""

    def __init__(self, run, *args, env=None, files=None):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dlcli", "serve", run.name, "--runs-dir", run.parent, "--port", "0", *args],
            stderr=subprocess.PIPE, text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SOURCE, **(env or {})},
            preexec_fn=None if files is None else lambda: _limit_files(files))
        first = self.process.stderr.readline()
        assert "serving run" in first, first + self.process.stderr.read()
        self.lines = [first]
        self.url = first.split(" at ")[1].split()[0]
        self.port = int(self.url.rstrip("/").rsplit(":", 1)[1])
        self.pid = self.process.pid
        self.reader = threading.Thread(target=lambda: self.lines.extend(self.process.stderr), daemon=True)
        self.reader.start()

    def stop(self) -> list[str]:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        self.reader.join(5)
        assert self.process.returncode == 0, "".join(self.lines)
        return self.lines

    def memory(self, key: str = "VmRSS") -> int:
        """VmRSS (now) or VmHWM (the peak so far) of the server process, in MB."""
        with open(f"/proc/{self.pid}/status") as f:
            return next(int(line.split()[1]) // 1024 for line in f if line.startswith(key + ":"))

    def call(self, path, body=None, headers=None, method=None):
        """(status, headers, JSON or text) of one request on a fresh connection."""
        request = urllib.request.Request(self.url.rstrip("/") + path, data=body, headers=headers or {},
                                         method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.headers, _decoded(response.read())
        except urllib.error.HTTPError as err:
            return err.code, err.headers, _decoded(err.read())


def _limit_files(n: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_NOFILE, (n, n))


def _decoded(data: bytes):
    try:
        return json.loads(data)
    except ValueError:
        return data.decode("utf-8", "replace")


@contextlib.contextmanager
def serving(run, *args, **kwargs):
    server = Server(run, *args, **kwargs)
    try:
        yield server
    finally:
        if server.process.poll() is None:
            server.process.kill()


def png(size, color=(200, 10, 10)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    return out.getvalue()


def at_once(n, fn):
    """fn() from n threads at once; their results."""
    results, threads = [None] * n, []
    for i in range(n):
        threads.append(threading.Thread(target=lambda i=i: results.__setitem__(i, fn())))
        threads[-1].start()
    for t in threads:
        t.join()
    return results


def idle_socket(port):
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def read_all(sock, wait=0.2) -> bytes | None:
    """What the server sent before closing the socket; None if it is still open."""
    sock.settimeout(wait)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (socket.timeout, BlockingIOError):
        return None
    except OSError:  # reset: closed
        pass
    return data


IMAGE = {"Content-Type": "image/png"}
JSON = {"Content-Type": "application/json"}
CSV = {"Content-Type": "text/csv"}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


# ---------------------------------------------------------------- 1. connections and requests in flight


@pytest.fixture(scope="module")
def guarded(runs):
    """Short timeouts, 3 requests in flight, and a process allowed 400 files (so room for 200 connections)."""
    with serving(runs["image"], "--header-timeout", "1", "--body-timeout", "2", "--max-in-flight", "3",
                 files=400) as server:
        yield server


def test_idle_sockets_and_keep_alive_clients_do_not_shut_anyone_out(guarded):
    """uvicorn's limit_concurrency counted connections: 63 silent sockets, or 64 keep-alive clients, made every
    request a 503. Connections are not capped now; past the room the process has (here 100), the one idle the
    longest is closed for a new one (here past 200); and a connection that sends no complete request within
    --header-timeout is closed, with a 408 where part of a request came."""
    idle = [idle_socket(guarded.port) for _ in range(260)]
    slow = []
    for _ in range(10):
        s = idle_socket(guarded.port)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # ... and the rest never comes
        slow.append(s)
    started = time.monotonic()
    status, _, answer = guarded.call("/health")
    assert status == 200 and answer["status"] == "ok" and time.monotonic() - started < 1.0
    assert sum(read_all(s, 0.01) is not None for s in idle[:100]) >= 60  # the oldest idle ones made room

    clients = [http.client.HTTPConnection("127.0.0.1", guarded.port, timeout=10) for _ in range(70)]
    for _ in range(2):  # 70 keep-alive connections, each asking twice
        for c in clients:
            c.request("GET", "/info")
            response = c.getresponse()
            assert response.status == 200, response.read()
            response.read()
    for c in clients:
        c.close()

    time.sleep(1.2)  # past --header-timeout
    assert all(read_all(s) is not None for s in idle), "an idle connection outlived --header-timeout"
    for s in slow:
        answer = read_all(s)
        assert answer is not None and answer.startswith(b"HTTP/1.1 408 "), answer
        assert b'"error": "the request\'s headers did not arrive within 1 s (--header-timeout)"' in answer
    for s in idle + slow:
        s.close()


def test_requests_in_flight_are_capped_with_503_and_slow_bodies_time_out(guarded):
    """Three uploads that never finish hold the three request slots: the next request is a 503 JSON with
    Retry-After, /health still answers, and after --body-timeout each slow one is a 408 and its connection closes.
    The refusals are one log line, not one per request."""
    logged = len(guarded.lines)
    uploads = []
    for _ in range(3):
        s = idle_socket(guarded.port)
        s.sendall(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
                  b"Content-Length: 100000\r\n\r\n" + png((8, 8))[:20])
        uploads.append(s)
    time.sleep(0.3)
    refused = [guarded.call("/predict", png((16, 16)), IMAGE) for _ in range(20)]
    assert {r[0] for r in refused} == {503}
    status, headers, answer = refused[0]
    assert headers["Retry-After"] == "1" and headers["Content-Type"] == "application/json"
    assert answer["error"] == "3 requests in flight, the most this server takes (--max-in-flight): retry in a moment"
    assert guarded.call("/health")[0] == 200  # not counted: a health check gets through a full server
    time.sleep(2.0)
    for s in uploads:
        answer = read_all(s, 1.0)
        assert answer is not None and answer.startswith(b"HTTP/1.1 408 "), answer
        assert b"the request body did not arrive within 2 s (--body-timeout)" in answer
        s.close()
    assert guarded.call("/predict", png((16, 16)), IMAGE)[0] == 200  # the slots are free again
    lines = [line for line in guarded.lines[logged:] if "refused" in line]
    assert len(lines) <= 1, lines  # 20 refusals and 3 timeouts: counted, told in a line every 10 s at most


# ---------------------------------------------------------------- 2 and 3. pixels, decodes and formats


@pytest.fixture(scope="module")
def images(runs):
    """Up to 9 megapixels an image (decoded in blocks glibc keeps unless told), 10 a request."""
    with serving(runs["image"], "--max-pixels", "9000000", "--max-request-pixels", "10000000") as server:
        assert server.call("/predict", png((16, 16)), IMAGE)[0] == 200  # warm: torch and PIL loaded
        yield server


def test_pixel_limits_come_from_the_model_and_bombs_cost_nothing(guarded, images):
    """By default --max-pixels is 256 times the model's 16 x 16 input, floored at 2048 x 2048, and a request may
    decode 8 times that; a small PNG of many pixels over the limit is refused from its header, at no cost in memory;
    a JPEG as big decodes at a reduced scale and is answered; a request's images share a pixel budget."""
    limits = guarded.call("/info")[2]["limits"]
    assert (limits["max_pixels"], limits["max_request_pixels"]) == (2048 * 2048, 8 * 2048 * 2048)
    before = images.memory("VmHWM")
    bomb = png((4000, 4000))  # 58 KB, 16 megapixels
    started = time.monotonic()
    answers = at_once(8, lambda: images.call("/predict", bomb, IMAGE))
    assert time.monotonic() - started < 2.0
    assert {a[0] for a in answers} == {413}
    assert answers[0][2]["error"] == ("body: 4000 x 4000 = 16,000,000 pixels, over this server's limit of "
                                      "9,000,000 (--max-pixels)")
    assert images.memory("VmHWM") - before < 20

    photo = io.BytesIO()
    Image.new("RGB", (4000, 4000), (10, 120, 10)).save(photo, "JPEG")  # 16 megapixels, decoded at 1/8: 500 x 500
    assert images.call("/predict", photo.getvalue(), {"Content-Type": "image/jpeg"})[0] == 200

    files = [("files", (f"{i}.png", png((2000, 2000)))) for i in range(3)]  # 4 megapixels each: 12 in all
    status, _, answer = images.call("/predict", *multipart(files))
    assert status == 413 and answer["error"].startswith("2.png: 2000 x 2000 pixels would take this request's images "
                                                        "to 12,000,000 pixels, over this server's limit of "
                                                        "10,000,000 per request (--max-request-pixels")


def test_concurrent_decodes_are_bounded_and_their_memory_given_back(images):
    """Eight 9-megapixel PNGs at once: as many decodes run together as there are cores (each holds ~110 MB), and
    their memory goes back to the system afterwards (glibc kept ~140 MB of these eight, 12.5 GB of 32 bigger ones)."""
    cores = len(os.sched_getaffinity(images.pid))
    base = images.memory()
    peak_before = images.memory("VmHWM")
    picture = png((3000, 3000), (30, 60, 90))
    answers = at_once(8, lambda: images.call("/predict", picture, IMAGE))
    assert {a[0] for a in answers} == {200}, answers[0]
    grown = images.memory("VmHWM") - max(base, peak_before)
    assert grown < 130 * min(8, cores) + 40, f"the peak grew by {grown} MB with {cores} cores"
    assert images.memory() - base < 70, "the decodes' memory was kept"


def test_formats_outside_the_allow_list_are_refused_before_decoding(images):
    """An ICO holding a 6000 x 6000 PNG: PIL decodes the PNG while opening an ICO, so ICO is not opened at all."""
    inner = png((6000, 6000))
    ico = struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(inner), 22) + inner
    before = images.memory("VmHWM")
    started = time.monotonic()
    status, _, answer = images.call("/predict", *multipart([("files", ("favicon.ico", ico))]))
    assert time.monotonic() - started < 0.5 and images.memory("VmHWM") - before < 20
    assert status == 415 and answer["error"].startswith("favicon.ico: ICO images are not read here (send PNG, JPEG,")


def test_answers_name_inputs_without_echoing_them_whole(images):
    name = "n" * 1000 + ".png"
    status, _, answer = images.call("/predict", *multipart([("files", (name, png((16, 16))))]))
    assert status == 200 and answer[0]["image"] == "n" * 197 + "...", answer


def multipart(files):
    boundary = "hardening-boundary"
    body = b""
    for field, (name, data) in files:
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\n"
                 "Content-Type: application/octet-stream\r\n\r\n").encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


# ---------------------------------------------------------------- 4, 5, 6 and 7 on a table run with a token


@pytest.fixture(scope="module")
def tables(runs):
    with serving(runs["table"], "--allowed-host", "models.example", env={"DLCLI_SERVE_TOKEN": TOKEN}) as server:
        yield server


def test_a_token_is_required_and_foreign_hosts_and_origins_are_refused(tables):
    rows = b"x1,x2,color\n1,2,red\n"
    status, headers, answer = tables.call("/info")
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer" and "Authorization: Bearer" in answer["error"]
    assert tables.call("/predict", rows, {**CSV, "Authorization": "Bearer nope"})[0] == 401
    assert tables.call("/predict", rows, {**CSV, "Authorization": TOKEN})[0] == 401  # no scheme
    for scheme in ("Basic", "Token", "Bearerx", "X-Bearer"):  # the right token under another scheme
        assert tables.call("/predict", rows, {**CSV, "Authorization": f"{scheme} {TOKEN}"})[0] == 401, scheme
    assert tables.call("/predict", rows, {**CSV, "Authorization": f"bearer {TOKEN}"})[0] == 200  # RFC 7235: any case
    assert tables.call("/predict", rows, {**CSV, **AUTH})[0] == 200
    assert tables.call("/health")[0] == 200 and tables.call("/")[0] == 200  # the page asks for the token itself
    assert "requests need the token" in tables.lines[1] and TOKEN not in "".join(tables.lines)

    for host, expected in (("evil.example", 403), ("evil.example:80", 403), ("models.example", 200),
                           ("evilmodels.example", 403), ("evil.models.example", 403), ("models.example.evil", 403),
                           ("evillocalhost", 403), ("127.0.0.1.evil.example", 403),
                           (f"localhost:{tables.port}", 200), ("192.168.1.20:8000", 200), ("[::1]:80", 200)):
        status, _, answer = tables.call("/info", headers={**AUTH, "Host": host})
        assert status == expected, (host, answer)
    assert tables.call("/info", headers={**AUTH, "Host": "evil.example"})[2]["error"] == (
        "Host 'evil.example' is not a name of this server (dlcli serve --allowed-host evil.example adds it)")
    # a page elsewhere makes the browser POST here (multipart and text/plain need no preflight): its Origin tells
    for origin, expected in (("https://evil.example", 403), ("null", 403), (tables.url.rstrip("/"), 200),
                             ("https://evilmodels.example", 403), ("https://models.example.evil", 403),
                             ("http://localhost:3000", 200), ("https://models.example", 200)):
        assert tables.call("/predict", rows, {**CSV, **AUTH, "Origin": origin})[0] == expected, origin


def test_access_matches_the_token_scheme_and_host_names_exactly():
    """The rules behind the 401s and 403s above, case by case: the token counts only under the Bearer scheme (any
    case, RFC 7235), compared whole; a host name counts only as itself, so a name that merely ends or starts with an
    allowed one (which anyone can register and point here) is foreign; loopback names and IP addresses need no
    allowing (a DNS rebinding needs a name); `.localhost` names never leave the machine (RFC 6761)."""
    from dlcli.serve.guard import Access

    access = Access.of(TOKEN, "127.0.0.1", ["models.example"])
    for header, ok in ((f"Bearer {TOKEN}", True), (f"bearer {TOKEN}", True), (f"BEARER  {TOKEN} ", True),
                       (TOKEN, False), (f"Basic {TOKEN}", False), (f"Token {TOKEN}", False),
                       (f"Bearerx {TOKEN}", False), (f"xBearer {TOKEN}", False), (f"Bearer {TOKEN}x", False),
                       (f"Bearer {TOKEN[:-1]}", False), ("Bearer ", False), ("", False), (None, False)):
        assert access.token_ok(header) is ok, header
    assert Access.of(None, "127.0.0.1", []).token_ok(None)  # no token given to the server: anyone on the port
    for host, ok in (("models.example", True), ("Models.Example.:8000", True), ("localhost:8000", True),
                     ("app.localhost", True), ("10.1.2.3:80", True), ("[::1]:8000", True),
                     ("evilmodels.example", False), ("evil.models.example", False), ("models.example.evil", False),
                     ("models.examplex", False), ("xlocalhost", False), ("localhost.evil.example", False),
                     ("127.0.0.1.evil.example", False), ("evil.example", False)):
        assert access.host_ok(host) is ok, host
    for origin, ok in (("https://models.example", True), ("http://localhost:3000", True),
                       ("http://127.0.0.1:9", True), ("https://evilmodels.example", False),
                       ("https://evil.models.example", False), ("https://models.example.evil", False),
                       ("null", False), ("http://10.1.2.3", False)):
        assert access.origin_ok(origin, "127.0.0.1:8000") is ok, origin
    assert Access.of(None, "0.0.0.0", ["*"]).host_ok("anything.example")


@pytest.mark.parametrize("body, headers, status, error", [
    (b"[" * 100_000 + b"]" * 100_000, JSON, 400, "the body's JSON is nested too deeply (send a flat object)"),
    (b'{"rows": [{"x1": ' + b"1" * 5000 + b', "x2": 1, "color": "red"}]}', JSON, 422,
     "a number of thousands of digits in the body: a model input holds at most about 3.4e38 (a float32)"),
    (b'{"rows": [{"x1": 1, "x2": 1, "color": "red"}, {"x1": 1, "x2": Infinity, "color": "red"}]}', JSON, 422,
     "rows[1], column 'x2': 'inf' is not a number"),
    (b'{"rows": [{"x1": 1e39, "x2": 1, "color": "red"}]}', JSON, 422, "rows[0], column 'x1': '1e+39' is not a number"),
    (b"x1,x2,color\n1,inf,red\n", CSV, 422, "body: line 2, column 'x2': 'inf' is not a number"),
    (b"x1,x2,color\n1,2,red\n-1e39,1,red\n", CSV, 422, "body: line 3, column 'x1': '-1e+39' is not a number"),
    (b"x1,x2,color\n" + b"1" * 5000 + b",1,red\n", CSV, 422, "body: line 2, column 'x1': 'inf' is not a number"),
    (b"x1,x2,x1,color\n1,1,1,red\n", CSV, 422, "body: column 'x1' appears more than once (keep one)"),
    (b"x1,x2,color\n" + b"z" * 10_000 + b",1,red\n", CSV, 422,
     "body: line 2, column 'x1': '" + "z" * 57 + "...' (10,000 characters) is not a number"),
])
def test_odd_bodies_are_one_line_4xx_json(tables, body, headers, status, error):
    got, answer_headers, answer = tables.call("/predict", body, {**headers, **AUTH})
    assert (got, answer) == (status, {"error": error})
    assert answer_headers["Content-Type"] == "application/json"


def test_predict_says_the_same_in_one_line(runs, tmp_path):
    run = runs["table"]
    for text, error in (("x1,x2,color\n1,inf,red\n", "line 2, column 'x2': 'inf' is not a number"),
                        ("x1,x2,color\n1e39,1,red\n", "line 2, column 'x1': '1e+39' is not a number"),
                        ("x1,x2,x1,color\n1,1,1,red\n", "column 'x1' appears more than once (keep one)")):
        path = tmp_path / "rows.csv"
        path.write_text(text)
        result = cli("predict", path, "--run", run.name, "--runs-dir", run.parent)
        assert result.exit_code == 2 and result.stderr == f"error: {path}: {error}\n", result.output


def test_costly_bodies_stay_off_the_event_loop(tables):
    """JSON that takes long to parse, eight at once, and a CSV of 110,000 unknown columns: /health keeps answering
    at once (the JSON was parsed on the event loop, eight 16.5 MB bodies stalled it 35 s); a JSON body is no bigger
    than --max-items rows need, and the CSV is read in its trained columns only (read whole it cost a gigabyte)."""
    numbers = b'{"rows": [[' + b",".join([b"0.5"] * 1_200_000) + b"]]}"  # 5 MB, 0.3 s to parse; no objects
    jobs = threading.Thread(target=lambda: at_once(8, lambda: tables.call("/predict", numbers, {**JSON, **AUTH})))
    jobs.start()
    worst = 0.0
    while jobs.is_alive():
        started = time.monotonic()
        assert tables.call("/health")[0] == 200
        worst = max(worst, time.monotonic() - started)
        time.sleep(0.02)
    assert worst < 0.25, f"/health took {worst:.2f} s while JSON was parsed"
    status, _, answer = tables.call("/predict", numbers, {**JSON, **AUTH})
    assert (status, answer["error"]) == (413, "the JSON body (4,800,013 bytes) is over 1,048,576 bytes, more than "
                                              "64 rows need (--max-items; send fewer at a time)")
    assert tables.call("/info", headers=AUTH)[2]["limits"]["max_json_bytes"] == 1 << 20

    many = b'{"rows": [' + b",".join([b'{"x1": 1, "x2": 2, "color": "red"}'] * 29_000) + b"]}"  # 1 MB
    status, _, answer = tables.call("/predict", many, {**JSON, **AUTH})  # the parse stops at row 66
    assert status == 413 and answer["error"] == "more than 64 rows in one request, over this server's limit " \
                                                "(--max-items)"

    n = 110_000
    wide = ("x1,x2,color," + ",".join(f"c{i}" for i in range(n)) + "\n" +
            ("1,2,red," + ",".join("1" for _ in range(n)) + "\n") * 2).encode()
    before = tables.memory("VmHWM")
    status, _, answer = tables.call("/predict", wide, {**CSV, **AUTH})
    assert status == 200 and [a["row"] for a in answer] == ["line 2", "line 3"]
    assert tables.memory("VmHWM") - before < 150


def test_answers_carry_safety_headers_and_echo_no_whole_input(tables):
    status, headers, page = tables.call("/")
    assert status == 200 and headers["X-Content-Type-Options"] == "nosniff"
    policy = headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy and "script-src 'sha256-" in policy
    assert tables.call("/info", headers=AUTH)[1]["X-Content-Type-Options"] == "nosniff"
    assert tables.call("/docs", headers=AUTH)[0] == 404  # Swagger UI loads from a CDN: off unless --docs
    status, _, answer = tables.call("/predict?top_k=" + "9" * 3000 + "x", b"x1,x2,color\n1,1,red\n", {**CSV, **AUTH})
    assert status == 400 and len(answer["error"]) < 150
    status, _, answer = tables.call("/predict", b"x1,x2,color\n1,1," + b"r" * 5000 + b"\n", {**CSV, **AUTH})
    assert status == 200 and len(json.dumps(answer)) < 1000  # an unseen category: answered, not echoed


def test_an_open_server_warns_and_tells_refusals_once_per_burst(runs):
    """Listening beyond loopback without a token is a warning; 30 refused requests are two log lines: the first, and
    the count of the others (every 10 s, or at the end)."""
    with serving(runs["table"], "--host", "0.0.0.0") as server:
        for _ in range(30):
            assert server.call("/info", headers={"Host": "evil.example"})[0] == 403
        lines = server.stop()
    assert lines[1].startswith("warning: listening on 0.0.0.0 with no token: anyone who reaches this port"), lines
    refused = [line for line in lines if "refused" in line]
    assert len(refused) == 2, refused
    assert refused[0].startswith("refused a request: 403 Host 'evil.example' is not a name of this server")
    assert refused[1].startswith("refused 29 more requests in ") and refused[1].endswith(": 29 with a foreign Host\n")


@pytest.mark.must_run_in_ci
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary: apt-get install chromium (.ci/run does)")
def test_the_page_works_with_a_token(tables):
    """The page takes the token from its address (#token=..., then dropped from it) or asks for it."""
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page()
        page.goto(tables.url + "#token=" + TOKEN)
        page.wait_for_selector("body[data-ready=true]", timeout=10_000)
        assert "#" not in page.url
        page.fill("#csv", "x1,x2,color\n2,2,red\n")
        page.click("#send-csv")
        page.wait_for_selector(".result .label", timeout=10_000)
        assert len(page.locator(".result .label").all_inner_texts()) == 2

        asked = browser.new_page()
        asked.goto(tables.url)
        asked.wait_for_selector("#token-input:not([hidden])", timeout=10_000)
        asked.fill("#token", TOKEN)
        asked.click("#token-input button")
        asked.wait_for_selector("body[data-ready=true]", timeout=10_000)
        browser.close()
