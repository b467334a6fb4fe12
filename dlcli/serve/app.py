"""The HTTP app: one run's model, loaded once, behind POST /predict, GET /health, GET /info and a page at /.

Requests are turned into the model's input by the code `dlcli predict` uses (dlcli.data.images for images, the run's
stored column encoding or vocabulary for rows and texts), and answered with `dlcli predict --json`'s list: the run's
task (dlcli.tasks) decodes the model's outputs (top-k classes, a number per target, a set of labels). Every failure
is a 4xx JSON `{"error": "..."}` naming the problem; the server goes on serving.

Batching: the model runs in one worker thread. Whatever requests are waiting when it becomes free run through the
model together (up to --max-batch samples), so a lone request never waits for a timer and concurrent ones share a
forward pass (benchmarks/serve.py measures what that buys).

Untrusted input costs little before it is refused (dlcli.serve.guard has who may call, how many requests may be in
flight and how long a client may take): bodies are parsed, images decoded and rows encoded in worker threads (the
event loop keeps answering), big images and bodies one per core at a time, and each kind of input is bounded before
the expensive step: an image's format and pixels are read from its header and a request's pixels budgeted; a JSON
body is no bigger than --max-items rows or texts need, and its parse stops at the objects they can hold; a CSV is
read in the columns the model was trained on only.
"""

import asyncio
import base64
import concurrent.futures
import hashlib
import io
import json
import os
import queue
import re
import signal
import socket
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from dlcli.errors import BAD_INPUT, DlcliError
from dlcli.serve.guard import ApiError, shown

STATIC = Path(__file__).parent / "static"
STOP = object()  # tells the model thread to end
# Formats recognised by their first bytes and decoded only on load(), so that the size is known first. Not ICO
# (Pillow decodes its embedded PNG while opening it), TGA (no signature: any bytes can pass for one), EPS (it runs
# Ghostscript), nor the rare ones nobody uploads. JPEG opens MPOs too (a camera's JPEG holding several frames).
SERVE_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF", "PPM", "JPEG2000")
TRIM_PIXELS = 1_000_000  # a request that decoded this many pixels hands the freed memory back to the system
BIG_DECODE = 512 * 512  # an image of this many pixels or more waits for one of a core's decode slots
BIG_BODY = 256 * 1024  # a body of rows or texts this big waits for one of a core's preparation slots
ANSWER_NAME = 200  # characters of an input's name (a file name, a text) an answer repeats


@dataclass
class Limits:
    max_bytes: int = 16 * 1024 * 1024  # a request body
    max_pixels: int | None = None  # width x height of one image as decoded (after a JPEG's reduced decode)
    max_request_pixels: int | None = None  # all the images of one request, decoded
    max_items: int = 64  # images, rows or texts per request
    max_in_flight: int = 64  # requests read, prepared or run at once; more get 503 and Retry-After
    header_timeout: float = 10.0  # seconds for a request's headers to arrive (idle connections close after it)
    body_timeout: float = 60.0  # seconds for its body to arrive after them (16 MiB: 280 KB/s)
    max_connections: int | None = None  # open connections before the one idle the longest is closed
    max_json_bytes: int | None = None  # a JSON body (rows, texts): what --max-items of them need, parsed after

    def resolved(self, input_shape) -> "Limits":
        """The defaults that depend on the model and the machine, filled in. An image is worth decoding at up to
        256 times the model's input (16 times its side: far more detail is resized away), within 2048 x 2048 and
        25 megapixels; a request, at up to 8 such images. JPEGs decode at a reduced scale first, so a 24-megapixel
        photo costs a small share of that."""
        pixels, budget = self.max_pixels, self.max_request_pixels
        if input_shape is not None and len(input_shape) == 3:
            _, h, w = input_shape
            pixels = pixels or min(25_000_000, max(2048 * 2048, 256 * h * w))
            budget = budget or 8 * pixels
        return replace(self, max_pixels=pixels, max_request_pixels=budget,
                       max_connections=self.max_connections or _connection_room())


def _connection_room() -> int:
    """Half the file descriptors this process may open, 64 to 4096: the other half takes what a burst of new
    connections brings before the idle ones are closed (all that wait are accepted at once), and the model's files."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return 512
    return 4096 if soft == resource.RLIM_INFINITY else max(64, min(4096, soft // 2))


def _more_files() -> None:
    """Raise this process's soft limit on open files to its hard limit (at most 65,536): a server holds one per
    connection, and 1,024, a common default, is soon reached."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = 65_536 if hard == resource.RLIM_INFINITY else min(hard, 65_536)
        if soft != resource.RLIM_INFINITY and soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    except (ImportError, OSError, ValueError):
        pass


def _json_room(model, limits: Limits) -> int:
    """Bytes of JSON that --max-items rows or texts take at most, and 1 MiB whatever they are: a row, 1 KiB a
    column; a text, 64 bytes a token of the run's max_length (what is read of it)."""
    if model.kind == "table":
        per_item = 1024 * (len(model.features()) + 1)
    elif model.kind == "sequence":  # a series: 32 bytes a value of its steps and channels
        steps, channels = model.info["input_shape"]
        per_item = 32 * steps * channels
    elif model.kind == "series":  # a forecast's history, up to its step limit (dlcli.serve.forecast)
        from dlcli.serve.forecast import json_room

        return min(limits.max_bytes, max(1 << 20, json_room(model, limits.max_items)))
    else:
        per_item = 64 * model.loaded.cfg.data.max_length
    return min(limits.max_bytes, max(1 << 20, limits.max_items * per_item))


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


_LIBC = None


def _give_memory_back() -> None:
    """glibc keeps what a thread freed in that thread's arena; after a big decode, return it to the system (32
    concurrent 25-megapixel decodes otherwise left 12.5 GB held). Nothing where libc has no malloc_trim."""
    global _LIBC
    if _LIBC is None:
        import ctypes

        try:
            _LIBC = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC(0)


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

    def close(self, wait: float = 10.0) -> None:
        """Stop the model thread after the batches already queued, and wait for it: a daemon thread still inside
        torch while the interpreter tears down can abort the process (seen as an exit by SIGABRT on shutdown)."""
        self.jobs.put(STOP)
        if self.thread is not threading.current_thread():
            self.thread.join(wait)

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
        from dlcli import rundirs as runs
        from dlcli.loaded import data_kind, load_run, read_data_info

        self.run = run
        self.info = read_data_info(run)
        self.kind = data_kind(self.info)
        if (self.info["preprocessing"] or {}).get("kind") == "series":  # a forecast reads a history, not rows
            self.kind = "series"
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
        if self.kind == "series":
            from dlcli.serve.forecast import input_spec

            return input_spec(self)
        if self.kind == "sequence":
            return {"length": self.info["input_shape"][0], "channels": self.state["channels"],
                    "shorter_series": bool(self.state.get("padded")),
                    "send": 'JSON: one series as a list of numbers (one channel) or of [channel values] rows, or '
                            '{"series": [series, ...]}; a longer series keeps its first `length` steps'}
        return {"numeric": self.state["numeric"], "categorical": self.state["categories"],
                "send": 'text/csv with a header row, or JSON {"rows": [{"column": value, ...}, ...]}'}

    def decode_image(self, data: bytes, name: str, invert: bool, limits: Limits, admit=None, sizes=None):
        """Uploaded bytes -> the uint8 tensor predict makes of a file. Format and size are read from the header
        before anything is decoded: a format outside SERVE_FORMATS is 415, an image over --max-pixels (as decoded:
        a JPEG at its reduced scale) 413, and admit(width, height) may refuse it too (the request's budget)."""
        from dlcli.data.images import ImageError, ImageTooLarge, UnreadFormat, load_image

        if not data:
            raise ApiError(422, f"{name}: empty file, not an image")
        try:
            return load_image(io.BytesIO(data), tuple(self.info["input_shape"]), invert, formats=SERVE_FORMATS,
                              max_pixels=limits.max_pixels, admit=admit, sizes=sizes)
        except ImageTooLarge as err:
            raise ApiError(413, f"{name}: {err.width} x {err.height} = {err.width * err.height:,} pixels, over this "
                                f"server's limit of {err.limit:,} (--max-pixels)") from None
        except UnreadFormat as err:
            raise ApiError(415, f"{name}: {err}") from None
        except ImageError as err:  # "refused: ..." is PIL's decompression-bomb limit, met in the header too
            raise ApiError(413 if str(err).startswith("refused: ") else 422, f"{name}: {err}") from None

    def encode_texts(self, texts: list[str]):
        import torch

        from dlcli.data.text import TextEncoder

        try:
            ids = TextEncoder(self.loaded.cfg.data, self.state).ids(texts, lambda i: f"text {i + 1}")
        except DlcliError as err:
            raise ApiError(422, str(err)) from None
        return torch.from_numpy(ids)

    def features(self) -> list[str]:
        return [*self.state["numeric"], *self.state["categories"]]

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
                message = str(err).replace(path, name)
                if name == "rows":  # JSON rows, written as CSV lines 2, 3, ...: say rows[0], rows[1], ...
                    message = re.sub(r"^rows: line (\d+)", lambda m: f"rows[{int(m.group(1)) - 2}]", message)
                raise ApiError(422, message) from None
        finally:
            os.unlink(path)
        return torch.from_numpy(x), [r.replace(f"{path}:", "line ") for r in rows]  # the CSV line (header: 1)


def _rows_as_csv(rows: list, columns: list[str]) -> str:
    import csv

    from dlcli.data.tables import missing_columns

    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise ApiError(400, f"rows[{i}] is not an object of column: value")
    # A column that no row names is refused, as predict refuses a file without it (filled, every answer would be
    # made up); a key that one row lacks is a missing value there, as in Run.predict's list of dicts and pandas.
    missing = [c for c in columns if not any(c in row for row in rows)]
    if missing:
        raise ApiError(422, f"rows: {missing_columns(missing, columns)}")
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for i, row in enumerate(rows):
        values = []
        for c in columns:
            v = row.get(c)
            if isinstance(v, (dict, list)):
                raise ApiError(422, f"rows[{i}].{c}: a number or a string, not {type(v).__name__}")
            values.append("" if v is None else v)
        writer.writerow(values)
    return out.getvalue()


def _trained_columns(text: str, body: bytes, features: list[str]) -> str:
    """The CSV in the columns the model was trained on only, when it has others: Arrow then converts just those
    (a header of 110,000 unknown columns cost a gigabyte read whole), as text, so that encode_rows reads each cell
    as it reads a file's. A trained column missing or named twice is refused from the header alone."""
    import csv
    from collections import Counter

    import pyarrow as pa
    import pyarrow.csv as pacsv

    from dlcli.data.tables import missing_columns

    try:
        header = next(csv.reader(io.StringIO(text)), [])
    except csv.Error as err:
        raise ApiError(422, f"body: malformed CSV header ({err})") from None
    counts = Counter(header)
    missing = [c for c in features if counts[c] == 0]
    if missing:
        raise ApiError(422, f"body: {missing_columns(missing, features)}")
    for c in features:
        if counts[c] > 1:
            raise ApiError(422, f"body: column '{c}' appears more than once (keep one)")
    if len(counts) == len(features):
        return text
    try:
        table = pacsv.read_csv(io.BytesIO(body), read_options=pacsv.ReadOptions(block_size=max(1 << 20, len(body))),
                               convert_options=pacsv.ConvertOptions(
                                   include_columns=features, column_types={c: pa.string() for c in features}))
    except (pa.ArrowException, OSError) as err:
        reason = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ApiError(422, f"body: malformed CSV ({reason.removeprefix('CSV parse error: ')})") from None
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(features)
    writer.writerows(zip(*(table.column(c).to_pylist() for c in features)))
    return out.getvalue()


class _TooMany(Exception):
    """A JSON body holding more objects than any request within --max-items could."""


def _json_body(body: bytes, max_objects: int):
    """The body's JSON, parsed so that a hostile one stays cheap and each failure is a 4xx: the parse stops at the
    (max_objects + 1)th object (_TooMany); an integer of over 4,300 digits (Python refuses to convert it) is a 422,
    NaN a gap, and Infinity is left to the table's rules (a 422 naming its row); nesting too deep for the parser is
    a 400."""
    objects = 0

    def counted(pairs):
        nonlocal objects
        objects += 1
        if objects > max_objects:
            raise _TooMany
        return dict(pairs)

    try:
        return json.loads(body, object_pairs_hook=counted,
                          parse_constant=lambda name: None if name == "NaN" else float(name))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ApiError(400, f"the body is not valid JSON ({err})") from None
    except RecursionError:
        raise ApiError(400, "the body's JSON is nested too deeply (send a flat object)") from None
    except ValueError:  # int(): "Exceeds the limit (4300 digits) for integer string conversion"
        raise ApiError(422, "a number of thousands of digits in the body: a model input holds at most about 3.4e38 "
                            "(a float32)") from None


def _texts(body: bytes, kind: str, limits: Limits) -> list[str]:
    if kind == "text/plain":
        try:
            texts = [line for line in body.decode("utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError:
            raise ApiError(400, "the body is not UTF-8 text") from None
    elif kind == "application/json" or not kind:
        try:
            data = _json_body(body, limits.max_items + 2)
        except _TooMany:
            data = None
        texts = data.get("texts", [data["text"]] if "text" in data else None) if isinstance(data, dict) else data
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise ApiError(400, 'send JSON {"texts": ["...", ...]} (a list of strings)')
    else:
        raise ApiError(415, f"this run takes texts: JSON or text/plain, not '{shown(kind)}'")
    if not texts:
        raise ApiError(400, "no texts in the request")
    if len(texts) > limits.max_items:
        raise ApiError(413, f"{len(texts)} texts in one request, over this server's limit of {limits.max_items} "
                            "(--max-items)")
    return texts


def _series(model: Model, body: bytes, kind: str, limits: Limits):
    """(names, float32 (N, T, C)) of a JSON body: one series (a list) or {"series": [series, ...]}."""
    import torch

    from dlcli.data.sequences import encode_values

    if kind not in ("application/json", ""):
        raise ApiError(415, f"this run takes series as JSON, not '{shown(kind)}'")
    try:
        data = _json_body(body, 2)
    except _TooMany:
        raise ApiError(400, 'send one series as a JSON list, or {"series": [series, ...]}') from None
    if isinstance(data, dict) and isinstance(data.get("series"), list):
        items, names = data["series"], [f"series[{i}]" for i in range(len(data["series"]))]
    elif isinstance(data, list):
        items, names = [data], ["series"]
    else:
        raise ApiError(400, 'send one series as a JSON list of numbers (or of [channel values] rows), or '
                            '{"series": [series, ...]}')
    if not items:
        raise ApiError(400, "no series in the request")
    if len(items) > limits.max_items:
        raise ApiError(413, f"{len(items)} series in one request, over this server's limit of {limits.max_items} "
                            "(--max-items)")
    try:
        return names, torch.from_numpy(encode_values(items, model.state, names))
    except DlcliError as err:
        raise ApiError(422, str(err)) from None


def _table_rows(model: Model, body: bytes, kind: str, limits: Limits):
    """(row names, features) of a CSV or JSON body; the count of rows is checked before anything is encoded."""
    if kind in ("text/csv", "text/plain"):
        try:
            text, name = body.decode("utf-8"), "body"
        except UnicodeDecodeError:
            raise ApiError(400, "the CSV body is not UTF-8") from None
        rows = max(0, len([line for line in text.splitlines() if line.strip()]) - 1)
    elif kind == "application/json" or not kind:
        try:  # a row is an object: one more than --max-items of them, and the wrapper, and the parse stops
            data = _json_body(body, limits.max_items + 2)
        except _TooMany:
            raise ApiError(413, f"more than {limits.max_items} rows in one request, over this server's limit "
                                "(--max-items)") from None
        rows = data.get("rows") if isinstance(data, dict) else data
        if isinstance(data, dict) and "rows" not in data:
            rows = [data]  # one row as an object
        if not isinstance(rows, list):
            raise ApiError(400, 'send JSON {"rows": [{"column": value, ...}, ...]}')
        name = "rows"
    else:
        raise ApiError(415, f"this run takes table rows: text/csv or JSON, not '{shown(kind)}'")
    count = rows if isinstance(rows, int) else len(rows)
    if count > limits.max_items:
        raise ApiError(413, f"{count} rows in one request, over this server's limit of {limits.max_items} "
                            "(--max-items)")
    if count == 0:
        raise ApiError(400, "no rows in the request")
    if name == "rows":
        x, names = model.encode_csv(_rows_as_csv(rows, model.features()), name)
        return [f"row {i + 1}" for i in range(len(names))], x
    x, names = model.encode_csv(_trained_columns(text, body, model.features()), name)
    return names, x


def _query(request, top_k_default: int) -> tuple[int, bool]:
    raw_k = request.query_params.get("top_k")
    try:
        top_k = top_k_default if raw_k is None else int(raw_k)
    except ValueError:
        raise ApiError(400, f"top_k must be a whole number, not '{shown(raw_k)}'") from None
    if top_k < 1:
        raise ApiError(400, f"top_k must be at least 1, not {top_k}")
    invert = request.query_params.get("invert", "false").lower()
    if invert not in ("true", "false", "1", "0", "yes", "no"):
        raise ApiError(400, f"invert must be true or false, not '{shown(invert)}'")
    return top_k, invert in ("true", "1", "yes")


def _content_type(request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _tidy(message: str) -> str:
    """An error as one line, long quoted values cut short: it names the bad value, it does not echo the input."""
    line = " ".join(message.splitlines())
    line = re.sub(r"'([^']{81,})'", lambda m: f"'{shown(m.group(1), 60)}' ({len(m.group(1)):,} characters)",
                  line)
    return line if len(line) <= 1000 else line[:997] + "..."


def _named(name: str) -> str:
    """An input's name (a file name, a text) as its answer repeats it: the start of a long one."""
    return name if len(name) <= ANSWER_NAME else name[: ANSWER_NAME - 3] + "..."


def _page_policy(page: str) -> str:
    """The page's Content-Security-Policy: its own inline script and style (by hash) and nothing else; previews
    are blob: images, requests go to this server, and no other site may frame it."""

    def digests(tag):
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(m.encode()).digest()).decode()}'"
                        for m in re.findall(rf"<{tag}>(.*?)</{tag}>", page, re.S))

    return (f"default-src 'none'; script-src {digests('script')}; style-src {digests('style')}; img-src blob:; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def create_app(run: Path, checkpoint: str = "best", device: str = "cpu", top_k: int = 5, max_batch: int = 32,
               limits: Limits | None = None, token: str | None = None, host: str = "127.0.0.1",
               allowed_hosts=(), docs: bool = False, say=None):
    """The FastAPI app serving `run` (its model loaded now, once, at app.state.model; the limits in force at
    app.state.limits). token: the bearer token requests need (None: none); host and allowed_hosts: the names a
    Host header may give (loopback names and IP addresses always); docs: serve /docs (Swagger UI, from a CDN)."""
    try:
        import python_multipart  # noqa: F401 (FastAPI's form parser)
        from fastapi import FastAPI, Request
        from fastapi.responses import HTMLResponse, JSONResponse, Response
        from starlette.concurrency import run_in_threadpool
        from starlette.datastructures import UploadFile
        from starlette.exceptions import HTTPException
        from starlette.requests import ClientDisconnect
    except ImportError:
        raise DlcliError('dlcli serve needs FastAPI, uvicorn and python-multipart: pip install "dlcli[serve]"',
                         BAD_INPUT) from None
    from dlcli.serve.guard import Access, Guard, Refusals

    if top_k < 1:
        raise DlcliError(f"--top-k must be at least 1, not {top_k}", BAD_INPUT)
    model = Model(run, checkpoint, device, max_batch)
    limits = (limits or Limits()).resolved(model.info["input_shape"] if model.kind == "image" else None)
    if model.kind != "image" and limits.max_json_bytes is None:
        limits = replace(limits, max_json_bytes=_json_room(model, limits))
    refusals = Refusals(say or (lambda line: print(line, file=sys.stderr, flush=True)))
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    page_headers = {"content-security-policy": _page_policy(page), "cache-control": "no-cache"}
    # Big decodes and big bodies take a slot each, one per core: their memory (a decode holds the whole image
    # several times over) and CPU stay bounded however many arrive. Small ones, most of the traffic, go straight
    # through: queued behind a slot they would reach the model one by one and miss its shared forward passes.
    decode_slots = threading.BoundedSemaphore(_cores())
    work = asyncio.Semaphore(_cores())

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        yield
        refusals.flush()
        model.close()

    app = FastAPI(title=f"dlcli: {run.name}", version="1", lifespan=lifespan, docs_url="/docs" if docs else None,
                  redoc_url=None)
    app.state.model, app.state.limits, app.state.refusals = model, limits, refusals

    @app.exception_handler(ApiError)
    async def api_error(request, err: ApiError):
        return JSONResponse({"error": _tidy(err.message)}, status_code=err.status)

    @app.exception_handler(HTTPException)
    async def http_error(request, err: HTTPException):  # starlette's own: 404, 405, a malformed multipart body
        return JSONResponse({"error": _tidy(str(err.detail))}, status_code=err.status_code)

    @app.exception_handler(ClientDisconnect)
    async def client_left(request, err):  # never sent: there is no one to answer
        return Response(status_code=400)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return HTMLResponse(page, headers=page_headers)

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

    async def body_of(request: Request, kind: str) -> bytes:
        """The body; a JSON one no bigger than --max-items rows or texts need: its parse holds the GIL to the end (a
        worker thread does not free the event loop from it), so its size bounds the stall. Read to its end all the
        same (it is under --max-bytes), so that the client hears the 413 instead of a reset connection."""
        body = await request.body()
        if kind in ("application/json", "") and len(body) > limits.max_json_bytes:
            noun = {"table": "rows", "sequence": "series", "series": "series"}.get(model.kind, "texts")
            raise ApiError(413, f"the JSON body ({len(body):,} bytes) is over {limits.max_json_bytes:,} bytes, more "
                                f"than {limits.max_items} {noun} need (--max-items; send fewer at a time)")
        return body

    async def prepared(fn, body: bytes, *args):
        """fn(body, *args) in a worker thread, so that the event loop stays free to answer and refuse; one big body
        per core at a time."""
        if len(body) < BIG_BODY:
            return await run_in_threadpool(fn, body, *args)
        async with work:
            return await run_in_threadpool(fn, body, *args)

    async def uploads_of(request: Request, kind: str) -> list[tuple[str, bytes]]:
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
                                f"'{shown(kind) or 'no Content-Type'}'")
        if not uploads:
            raise ApiError(400, "no image files in the request (multipart/form-data with a file field)")
        if len(uploads) > limits.max_items:
            raise ApiError(413, f"{len(uploads)} images in one request, over this server's limit of "
                                f"{limits.max_items} (--max-items)")
        return uploads

    def decode_all(uploads: list[tuple[str, bytes]], invert: bool, sizes=None):
        """The request's images, each checked against --max-pixels and the request's budget from its header, a big
        one decoded in a slot; freed memory handed back after many pixels."""
        import torch

        used = 0

        def decode(name: str, data: bytes):
            slot = False

            def admit(width: int, height: int) -> None:
                nonlocal used, slot
                if used + width * height > limits.max_request_pixels:
                    raise ApiError(413, f"{name}: {width} x {height} pixels would take this request's images to "
                                        f"{used + width * height:,} pixels, over this server's limit of "
                                        f"{limits.max_request_pixels:,} per request (--max-request-pixels: send "
                                        "fewer images at a time)")
                used += width * height
                if width * height >= BIG_DECODE:
                    slot = decode_slots.acquire()

            try:
                return model.decode_image(data, name, invert, limits, admit, sizes)
            finally:
                if slot:
                    decode_slots.release()

        try:
            return torch.stack([decode(_named(name), data) for name, data in uploads])
        finally:
            if used >= TRIM_PIXELS:
                _give_memory_back()

    def table_rows(body: bytes, kind: str):
        return _table_rows(model, body, kind, limits)

    def texts_in(body: bytes, kind: str):
        texts = _texts(body, kind, limits)
        return texts, model.encode_texts(texts)

    def series_in(body: bytes, kind: str):
        return _series(model, body, kind, limits)

    def history_in(body: bytes, kind: str):
        """A forecast run's request: (names, windows, target rows, the table, its frequency) (dlcli.serve.forecast)."""
        from dlcli.serve.forecast import SEND, forecast_inputs, max_objects

        if kind not in ("application/json", ""):
            raise ApiError(415, f"this run forecasts series sent as JSON, not '{shown(kind)}'")
        try:
            data = _json_body(body, max_objects(model, limits.max_items))
        except _TooMany:
            raise ApiError(413, f"more steps than --max-items series of history hold; send {SEND}") from None
        return forecast_inputs(model, data, limits.max_items)

    @app.post("/predict")
    async def predict(request: Request):
        k, invert = _query(request, top_k)
        kind = _content_type(request)
        given = "image" if kind.startswith("image/") else "table" if kind == "text/csv" else None
        if given and given != model.kind and (given == "image" or model.kind == "image"):  # sent to the wrong run
            from dlcli.loaded import wrong_kind

            raise ApiError(415, str(wrong_kind(model.run, model.kind, given, "serve")))
        if model.kind == "image":
            uploads = await uploads_of(request, kind)
            sizes = []  # each picture's own (height, width): masks and boxes are answered in its pixels
            names, x = [name for name, _ in uploads], await run_in_threadpool(decode_all, uploads, invert, sizes)
            if model.task.spatial:
                outputs = await asyncio.wrap_future(model.batcher.submit(x))
                return [{"image": _named(name), **answer}
                        for name, answer in zip(names, model.task.answers(outputs, k, sizes=sizes))]
            key = "image"
        elif model.kind == "text":
            names, x = await prepared(texts_in, await body_of(request, kind), kind)
            key = "text"
        elif model.kind == "sequence":
            names, x = await prepared(series_in, await body_of(request, kind), kind)
            key = "series"
        elif model.kind == "series":  # the forecast is the task's sum of the outputs and the windows' levels
            from dlcli.data.series import forecast_answers

            names, x, y, table, freq = await prepared(history_in, await body_of(request, kind), kind)
            outputs = await asyncio.wrap_future(model.batcher.submit(x))
            return forecast_answers(model.task, outputs, y, table, freq)
        else:
            names, x = await prepared(table_rows, await body_of(request, kind), kind)
            key = "row"
        outputs = await asyncio.wrap_future(model.batcher.submit(x))
        return [{key: _named(name), **answer} for name, answer in zip(names, model.task.answers(outputs, k))]

    app.add_middleware(Guard, limits=limits, access=Access.of(token, host, allowed_hosts), refusals=refusals)
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


def run_server(run: Path, host: str = "127.0.0.1", port: int = 8000, say=print, token: str | None = None,
               **options) -> None:
    """Load the run, listen, and serve until Ctrl-C or SIGTERM."""
    try:
        import uvicorn
    except ImportError:
        raise DlcliError('dlcli serve needs FastAPI, uvicorn and python-multipart: pip install "dlcli[serve]"',
                         BAD_INPUT) from None
    import logging

    from dlcli.serve.guard import QuietInvalidRequests, guarded_protocol, is_loopback

    _more_files()
    app = create_app(run, token=token, host=host, say=say, **options)
    model, limits, refusals = app.state.model, app.state.limits, app.state.refusals
    sock = listen(host, port)
    bound = sock.getsockname()[1]
    address = f"[{host}]" if ":" in host else host
    n, noun = len(model.classes), model.task.noun
    # No limit_concurrency: uvicorn's counts open connections, so idle sockets would shut everyone out. Requests in
    # flight are capped by the Guard; connections are timed and recycled by the protocol.
    config = uvicorn.Config(app, http=guarded_protocol(limits, refusals), log_level="warning", access_log=False,
                            lifespan="on", backlog=2048, timeout_graceful_shutdown=limits.body_timeout)
    logging.getLogger("uvicorn.error").addFilter(QuietInvalidRequests(refusals))
    server = uvicorn.Server(config)

    def stop(signum, frame):
        raise Stopped

    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then raises the signal again: a stop, not a failure. Set
    # before the address is printed: whoever reads it may stop the server at once.
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        say(f"serving run {run.name} ({model.kind}, {n} {noun.removesuffix('s') if n == 1 else noun}) at "
            f"http://{address}:{bound}/ (POST /predict, GET /info, GET /health; Ctrl-C stops)")
        if token:
            say(f"requests need the token: 'Authorization: Bearer TOKEN'; the page takes it at "
                f"http://{address}:{bound}/#token=TOKEN or asks for it")
        elif not is_loopback(host):
            say(f"warning: listening on {host} with no token: anyone who reaches this port can use the model and "
                "read /info (give --token, or DLCLI_SERVE_TOKEN, or keep it behind a proxy that authenticates)")
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
