"""The HTTP app: one run's model, loaded once, behind POST /predict, GET /health, GET /info and a page at /.

Requests are turned into the model's input by the code `dlcli predict` uses (dlcli.data.images for images, the run's
stored column encoding or vocabulary for rows and texts), and answered with `dlcli predict --json`'s list: the run's
task (dlcli.tasks) decodes the model's outputs (top-k classes, a number per target, a set of labels). Every failure
is a 4xx JSON `{"error": "..."}` naming the problem; the server goes on serving.

Batching: the model runs in one worker thread. Whatever requests are waiting when it becomes free run through the
model together (up to --max-batch samples), so a lone request never waits for a timer and concurrent ones share a
forward pass (benchmarks/serve.py measures what that buys).
"""

import asyncio
import concurrent.futures
import io
import json
import os
import queue
import signal
import socket
import tempfile
import threading
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from dlcli.errors import BAD_INPUT, DlcliError

STATIC = Path(__file__).parent / "static"
STOP = object()  # tells the model thread to end


@dataclass
class Limits:
    max_bytes: int = 16 * 1024 * 1024  # a request body
    max_pixels: int = 25_000_000  # width x height of one image (a 24-megapixel photo fits); decoded only under it
    max_items: int = 64  # images, rows or texts per request


class ApiError(Exception):
    """A request the server refuses: HTTP status and a one-line reason."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class Batcher:
    """Runs fn over the inputs of concurrent requests together, in one thread.

    The thread takes the first waiting request and every other one already queued, up to max_batch samples, runs
    fn once on their concatenation and hands each request its rows.
    """

    def __init__(self, fn, max_batch: int):
        self.fn, self.max_batch = fn, max_batch
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._loop, name="dlcli-model", daemon=True)
        self.thread.start()

    def submit(self, x) -> concurrent.futures.Future:
        future = concurrent.futures.Future()
        self.jobs.put((x, future))
        return future

    def close(self) -> None:
        self.jobs.put(STOP)

    def _loop(self) -> None:
        import torch

        pending = None
        while True:
            job = pending if pending is not None else self.jobs.get()
            pending = None
            if job is STOP:
                return
            batch, size = [job], len(job[0])
            while size < self.max_batch:
                try:
                    more = self.jobs.get_nowait()
                except queue.Empty:
                    break
                if more is STOP or size + len(more[0]) > self.max_batch:
                    pending = more  # the next batch starts with it (or the loop ends)
                    break
                batch.append(more)
                size += len(more[0])
            try:
                out = self.fn(torch.cat([x for x, _ in batch]) if len(batch) > 1 else batch[0][0])
            except Exception as err:  # every request of the batch gets the failure
                for _, future in batch:
                    _settle(future.set_exception, err)
                continue
            start = 0
            for x, future in batch:
                _settle(future.set_result, out[start : start + len(x)])
                start += len(x)


def _settle(setter, value) -> None:
    """Answer one request's future; one cancelled meanwhile (its client left, a shutdown) is skipped, so that the
    model thread goes on serving the others."""
    try:
        setter(value)
    except concurrent.futures.InvalidStateError:
        pass


class Model:
    """A run loaded once: what /info says about it, its input preparation for each data kind, and its task, which
    turns the batcher's raw outputs into answers."""

    def __init__(self, run: Path, checkpoint: str = "best", device: str = "cpu", max_batch: int = 32):
        from dlcli import runs
        from dlcli.loaded import data_kind, load_run, read_data_info

        self.run = run
        self.info = read_data_info(run)
        self.kind = data_kind(self.info)
        if self.kind == "image":
            from dlcli.loaded import check_image_run

            check_image_run(self.info, run.name)
        self.loaded = load_run(run, checkpoint, device, info=self.info)
        self.classes = self.loaded.classes
        self.task = self.loaded.task
        self.state = {k: v for k, v in (self.info["preprocessing"] or {}).items() if k != "kind"}
        try:
            summary = runs.read_json(run / "summary.json")
        except DlcliError:
            summary = {}
        self.metrics = {k: summary[k] for k in ("test", "best_epoch", "best_metric") if k in summary}
        self.metrics["headline"] = self.task.headline  # the test metric that sums the run up
        self.checkpoint = checkpoint
        # raw outputs: decoding them is the task's, per request (top_k differs between requests)
        self.batcher = Batcher(self.loaded.logits, max_batch)

    def close(self) -> None:
        self.batcher.close()

    def input_spec(self) -> dict:
        if self.kind == "image":
            c, h, w = self.info["input_shape"]
            return {"channels": c, "height": h, "width": w,
                    "send": "multipart/form-data with one or more image files, or one image as the body "
                            "(Content-Type: image/...); ?invert=true for dark strokes on a light background"}
        if self.kind == "text":
            data = self.loaded.cfg.data
            return {"max_length": data.max_length, "tokenizer": data.tokenizer.model_dump(),
                    "send": 'JSON {"texts": ["...", ...]} or text/plain, one text per line'}
        return {"numeric": self.state["numeric"], "categorical": self.state["categories"],
                "send": 'text/csv with a header row, or JSON {"rows": [{"column": value, ...}, ...]}'}

    def decode_image(self, data: bytes, name: str, invert: bool, limits: Limits):
        """Uploaded bytes -> the uint8 tensor predict makes of a file; the size is read from the header first."""
        from PIL import Image, UnidentifiedImageError

        from dlcli.data.images import ImageError, load_image

        if not data:
            raise ApiError(422, f"{name}: empty file, not an image")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                with Image.open(io.BytesIO(data)) as img:
                    width, height = img.size
        except Image.DecompressionBombError as err:
            raise ApiError(413, f"{name}: refused: {err}") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
            raise ApiError(422, f"{name}: not an image PIL can read") from None
        if width * height > limits.max_pixels:
            raise ApiError(413, f"{name}: {width} x {height} = {width * height:,} pixels, over this server's limit "
                                f"of {limits.max_pixels:,} (--max-pixels)")
        try:
            return load_image(io.BytesIO(data), tuple(self.info["input_shape"]), invert)
        except ImageError as err:
            raise ApiError(422, f"{name}: {err}") from None

    def encode_texts(self, texts: list[str]):
        import torch

        from dlcli.data.text import TextEncoder

        try:
            ids = TextEncoder(self.loaded.cfg.data, self.state).ids(texts, lambda i: f"text {i + 1}")
        except DlcliError as err:
            raise ApiError(422, str(err)) from None
        return torch.from_numpy(ids)

    def encode_csv(self, text: str, name: str):
        """(features, row names) of a CSV text with a header, encoded as predict encodes a file."""
        import torch

        from dlcli.data.tables import encode_rows

        handle, path = tempfile.mkstemp(suffix=".csv", prefix="dlcli-serve-")
        try:
            with os.fdopen(handle, "w", encoding="utf-8", newline="") as f:
                f.write(text)
            try:
                x, rows = encode_rows(path, self.state, self.loaded.cfg.data)
            except DlcliError as err:
                raise ApiError(422, str(err).replace(path, name)) from None
        finally:
            os.unlink(path)
        return torch.from_numpy(x), [r.replace(f"{path}:", "line ") for r in rows]  # the CSV line (header: 1)


def _rows_as_csv(rows: list, columns: list[str]) -> str:
    import csv

    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ApiError(400, f"rows[{i}] is not an object of column: value")
        values = []
        for c in columns:
            v = row.get(c)
            if isinstance(v, (dict, list)):
                raise ApiError(422, f"rows[{i}].{c}: a number or a string, not {type(v).__name__}")
            values.append("" if v is None else v)
        writer.writerow(values)
    return out.getvalue()


def _json_body(body: bytes):
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ApiError(400, f"the body is not valid JSON ({err})") from None


def _query(request, top_k_default: int) -> tuple[int, bool]:
    raw_k = request.query_params.get("top_k")
    try:
        top_k = top_k_default if raw_k is None else int(raw_k)
    except ValueError:
        raise ApiError(400, f"top_k must be a whole number, not '{raw_k}'") from None
    if top_k < 1:
        raise ApiError(400, f"top_k must be at least 1, not {top_k}")
    invert = request.query_params.get("invert", "false").lower()
    if invert not in ("true", "false", "1", "0", "yes", "no"):
        raise ApiError(400, f"invert must be true or false, not '{invert}'")
    return top_k, invert in ("true", "1", "yes")


class BodyLimit:
    """ASGI middleware: a body over max_bytes is refused with 413, by its Content-Length before it is read or by
    counting as it arrives (chunked uploads)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        problem = None
        if length is not None:
            try:
                if int(length) > self.max_bytes:
                    problem = (413, f"the request body ({int(length):,} bytes) is over this server's limit of "
                                    f"{self.max_bytes:,} bytes (--max-bytes)")
            except ValueError:
                problem = (400, "Content-Length is not a number")
        if problem:
            body = json.dumps({"error": problem[1]}).encode()
            await send({"type": "http.response.start", "status": problem[0],
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            return
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise ApiError(413, f"the request body is over this server's limit of {self.max_bytes:,} bytes "
                                        "(--max-bytes)")
            return message

        await self.app(scope, counted, send)


def create_app(run: Path, checkpoint: str = "best", device: str = "cpu", top_k: int = 5, max_batch: int = 32,
               limits: Limits | None = None):
    """The FastAPI app serving `run` (its model loaded now, once, at app.state.model)."""
    try:
        import python_multipart  # noqa: F401 (FastAPI's form parser)
        from fastapi import FastAPI, Request
        from fastapi.responses import HTMLResponse, JSONResponse
        from starlette.concurrency import run_in_threadpool
        from starlette.datastructures import UploadFile
        from starlette.exceptions import HTTPException
    except ImportError:
        raise DlcliError('dlcli serve needs FastAPI, uvicorn and python-multipart: pip install "dlcli[serve]"',
                         BAD_INPUT) from None
    if top_k < 1:
        raise DlcliError(f"--top-k must be at least 1, not {top_k}", BAD_INPUT)
    limits = limits or Limits()
    model = Model(run, checkpoint, device, max_batch)
    page = (STATIC / "index.html").read_text(encoding="utf-8")

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        yield
        model.close()

    app = FastAPI(title=f"dlcli: {run.name}", version="1", lifespan=lifespan, docs_url="/docs", redoc_url=None)
    app.state.model = model

    @app.exception_handler(ApiError)
    async def api_error(request, err: ApiError):
        return JSONResponse({"error": err.message}, status_code=err.status)

    @app.exception_handler(HTTPException)
    async def http_error(request, err: HTTPException):  # starlette's own: 404, 405, a malformed multipart body
        return JSONResponse({"error": str(err.detail)}, status_code=err.status_code)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return HTMLResponse(page)

    @app.get("/health")
    async def health():
        return {"status": "ok", "run_id": run.name}

    @app.get("/info")
    async def info():
        # top_k: null where the task's answers are not ranked lists (a number per target, a set of labels)
        return {"run_id": run.name, "data_kind": model.kind, "task": model.task.entry_name,
                "outputs": model.task.noun, "output_names": model.classes, "classes": model.classes,
                "checkpoint": model.loaded.checkpoint.stem,  # the one used (the other where it was damaged)
                "checkpoint_epoch": model.loaded.epoch, "dataset": model.loaded.cfg.data.dataset,
                "input": model.input_spec(), "metrics": model.metrics,
                "top_k": top_k if model.task.uses_top_k else None, "max_batch": max_batch,
                "limits": asdict(limits)}

    async def images_of(request: Request, invert: bool) -> tuple[list[str], list]:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind.startswith("image/") or kind == "application/octet-stream":
            uploads = [("body", await request.body())]
        elif kind == "multipart/form-data":
            try:
                form = await request.form(max_files=limits.max_items, max_fields=limits.max_items + 16)
            except HTTPException as err:
                if "Too many files" in str(err.detail):
                    raise ApiError(413, f"more than {limits.max_items} images in one request, over this server's "
                                        "limit (--max-items)") from None
                raise ApiError(400, f"malformed multipart/form-data body ({err.detail})") from None
            try:
                uploads = [(v.filename or k, await v.read())
                           for k, v in form.multi_items() if isinstance(v, UploadFile)]
            finally:
                await form.close()
        else:
            raise ApiError(415, f"this run takes images: send multipart/form-data files or an image body, not "
                                f"'{kind or 'no Content-Type'}'")
        if not uploads:
            raise ApiError(400, "no image files in the request (multipart/form-data with a file field)")
        if len(uploads) > limits.max_items:
            raise ApiError(413, f"{len(uploads)} images in one request, over this server's limit of "
                                f"{limits.max_items} (--max-items)")

        def decode_all():
            import torch

            return torch.stack([model.decode_image(data, name, invert, limits) for name, data in uploads])

        return [name for name, _ in uploads], await run_in_threadpool(decode_all)

    async def texts_of(request: Request) -> list[str]:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await request.body()
        if kind == "text/plain":
            try:
                texts = [line for line in body.decode("utf-8").splitlines() if line.strip()]
            except UnicodeDecodeError:
                raise ApiError(400, "the body is not UTF-8 text") from None
        elif kind == "application/json" or not kind:
            data = _json_body(body)
            texts = data.get("texts", [data["text"]] if "text" in data else None) if isinstance(data, dict) else data
            if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
                raise ApiError(400, 'send JSON {"texts": ["...", ...]} (a list of strings)')
        else:
            raise ApiError(415, f"this run takes texts: JSON or text/plain, not '{kind}'")
        if not texts:
            raise ApiError(400, "no texts in the request")
        if len(texts) > limits.max_items:
            raise ApiError(413, f"{len(texts)} texts in one request, over this server's limit of "
                                f"{limits.max_items} (--max-items)")
        return texts

    async def rows_of(request: Request) -> tuple[list[str], object]:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        body = await request.body()
        if kind in ("text/csv", "text/plain"):
            try:
                text, name = body.decode("utf-8"), "body"
            except UnicodeDecodeError:
                raise ApiError(400, "the CSV body is not UTF-8") from None
            rows = max(0, len([line for line in text.splitlines() if line.strip()]) - 1)
        elif kind == "application/json" or not kind:
            data = _json_body(body)
            rows = data.get("rows") if isinstance(data, dict) else data
            if isinstance(data, dict) and "rows" not in data:
                rows = [data]  # one row as an object
            if not isinstance(rows, list):
                raise ApiError(400, 'send JSON {"rows": [{"column": value, ...}, ...]}')
            columns = [*model.state["numeric"], *model.state["categories"]]
            text, name = _rows_as_csv(rows, columns), "rows"
            rows = len(rows)
        else:
            raise ApiError(415, f"this run takes table rows: text/csv or JSON, not '{kind}'")
        if rows > limits.max_items:
            raise ApiError(413, f"{rows} rows in one request, over this server's limit of {limits.max_items} "
                                "(--max-items)")
        if rows == 0:
            raise ApiError(400, "no rows in the request")
        x, names = await run_in_threadpool(model.encode_csv, text, name)
        if name == "rows":
            names = [f"row {i + 1}" for i in range(len(names))]
        return names, x

    @app.post("/predict")
    async def predict(request: Request):
        k, invert = _query(request, top_k)
        if model.kind == "image":
            names, x = await images_of(request, invert)
            key = "image"
        elif model.kind == "text":
            names = await texts_of(request)
            x = await run_in_threadpool(model.encode_texts, names)
            key = "text"
        else:
            names, x = await rows_of(request)
            key = "row"
        outputs = await asyncio.wrap_future(model.batcher.submit(x))
        return [{key: name, **answer} for name, answer in zip(names, model.task.answers(outputs, k))]

    app.add_middleware(BodyLimit, max_bytes=limits.max_bytes)
    return app


def listen(host: str, port: int) -> socket.socket:
    """A bound listening socket, so that a busy port is one clear error and --port 0 picks a free one."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise DlcliError(f"--host {host}: not an address this machine can listen on ({err.strerror})") from None
    family, _, proto, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM, proto)  # IPPROTO_TCP: asyncio then sets TCP_NODELAY (no 40 ms
    # Nagle + delayed-ACK stall between a response's header and body writes)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise DlcliError(f"cannot listen on {host}:{port} ({err.strerror}): choose another --port") from None
    sock.set_inheritable(True)
    return sock


def run_server(run: Path, host: str = "127.0.0.1", port: int = 8000, say=print, **options) -> None:
    """Load the run, listen, and serve until Ctrl-C or SIGTERM."""
    try:
        import uvicorn
    except ImportError:
        raise DlcliError('dlcli serve needs FastAPI, uvicorn and python-multipart: pip install "dlcli[serve]"',
                         BAD_INPUT) from None
    app = create_app(run, **options)
    model = app.state.model
    sock = listen(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    n, noun = len(model.classes), model.task.noun
    say(f"serving run {run.name} ({model.kind}, {n} {noun.removesuffix('s') if n == 1 else noun}) at "
        f"http://{shown}:{bound}/ (POST /predict, GET /info, GET /health; Ctrl-C stops)")
    # at most 64 requests in flight (each may hold a body of up to --max-bytes): more get 503 at once
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                          limit_concurrency=64, backlog=256))

    def stop(signum, frame):
        raise Stopped

    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again: a stop, not a failure
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        server.run(sockets=[sock])
    except (KeyboardInterrupt, Stopped):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
        model.close()
    say(f"stopped serving run {run.name}")


class Stopped(Exception):
    """SIGTERM, once uvicorn has finished the requests in flight."""
