"""`dlcli serve`: predict over HTTP for each data kind and task (the same answers as `dlcli predict --json`), limits and
errors as 4xx JSON after which the server goes on, batching of concurrent requests, and the page driven in a real
browser."""

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

from tests.test_export import TASK_ROWS, as_outputs, cli, predict_json, train_runs, train_task_runs, write_rows

pytest.importorskip("fastapi", reason='the serve extra is not installed: pip install -e ".[dev]"')
from fastapi.testclient import TestClient  # noqa: E402

from dlcli.serve.app import Batcher, Limits, create_app  # noqa: E402


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_runs(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def task_runs(tmp_path_factory):
    return train_task_runs(tmp_path_factory.mktemp("serve-tasks"))


@contextlib.contextmanager
def serving(run):
    """`dlcli serve RUN --port 0` as typed, in a process of its own on a loopback port: yields (its URL, the line it
    printed); SIGTERM stops it cleanly."""
    server = subprocess.Popen([sys.executable, "-m", "dlcli", "serve", run.name, "--runs-dir", run.parent,
                               "--port", "0"], stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        line = server.stderr.readline()  # "serving run ... at http://127.0.0.1:PORT/ ..."
        assert "serving run" in line, line + server.stderr.read()
        yield line.split(" at ")[1].split()[0], line
    finally:
        server.terminate()
        server.wait(10)
    assert server.returncode == 0


def http(url, body=None, content_type="application/json"):
    """(status, JSON) of a GET, or of a POST when there is a body."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type} if body else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


LOCAL = "http://127.0.0.1"  # TestClient's own host name, testserver, is not one this server answers to
TASK_OUTPUTS = {"regression": ("targets", ["price", "km"], "r2"), "multilabel": ("labels", ["a", "b", "c"], "f1_micro")}


@pytest.fixture(scope="module")
def image_client(trained):
    app = create_app(trained["image"], limits=Limits(max_bytes=200_000, max_pixels=64 * 64, max_items=4))
    with TestClient(app, base_url=LOCAL) as client:
        yield client


def shape_files(run, n):
    return sorted((run.parent.parent / "shapes" / "test").glob("*/*"))[:n]


def upload(files):
    return [("files", (f.name, f.read_bytes(), "application/octet-stream")) for f in files]


def close_to(answer, expected):
    """The same JSON as predict's, probabilities to float precision (batches differ in size)."""
    assert len(answer) == len(expected)
    for a, e in zip(answer, expected):
        assert [t["label"] for t in a["top"]] == [t["label"] for t in e["top"]]
        assert [t["index"] for t in a["top"]] == [t["index"] for t in e["top"]]
        assert all(abs(x["probability"] - y["probability"]) < 1e-6 for x, y in zip(a["top"], e["top"]))


def test_images_one_or_many_answer_as_predict(trained, image_client):
    run = trained["image"]
    files = shape_files(run, 3)
    expected = predict_json(run, *files)
    for e in expected:
        e["image"] = Path(e["image"]).name
        e["top"] = e["top"][:2]
    answer = image_client.post("/predict?top_k=2", files=upload(files))
    assert answer.status_code == 200, answer.text
    assert [a["image"] for a in answer.json()] == [f.name for f in files]
    close_to(answer.json(), expected)
    one = image_client.post("/predict?top_k=2", content=files[0].read_bytes(), headers={"Content-Type": "image/png"})
    close_to(one.json(), expected[:1])
    assert one.json()[0]["image"] == "body"


def test_health_info_and_page(trained, image_client):
    assert image_client.get("/health").json() == {"status": "ok", "run_id": trained["image"].name}
    info = image_client.get("/info").json()
    assert info["run_id"] == trained["image"].name and info["data_kind"] == "image"
    assert info["classes"] == info["output_names"] == ["cross", "disc", "square"]
    assert (info["task"], info["outputs"], info["top_k"], info["metrics"]["headline"]) == \
        ("classification", "classes", 5, "accuracy")
    assert info["input"]["channels"] == 3 and info["input"]["height"] == 16
    assert info["metrics"]["test"]["accuracy"] > 0 and info["limits"]["max_items"] == 4
    page = image_client.get("/")
    assert page.status_code == 200 and 'id="file"' in page.text and page.headers["content-type"].startswith("text/html")


def make_png(size):
    out = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(out, "PNG")
    return out.getvalue()


@pytest.mark.parametrize("request_, status, fragment", [
    (dict(files=[("files", ("notes.txt", b"hello", "text/plain"))]), 422, "notes.txt: not an image PIL can read"),
    (dict(files=[("files", ("empty.png", b"", "image/png"))]), 422, "empty.png: empty file"),
    (dict(files=[("files", ("cut.png", make_png((30, 30))[:70], "image/png"))]), 422, "cut.png: damaged or truncated"),
    (dict(files=[("files", ("big.png", make_png((65, 64)), "image/png"))]), 413,
     "big.png: 65 x 64 = 4,160 pixels, over this server's limit of 4,096"),
    (dict(files=[("files", (f"{i}.png", make_png((8, 8)), "image/png")) for i in range(5)]), 413,
     "more than 4 images"),
    (dict(content=b"x" * 200_001, headers={"Content-Type": "image/png"}), 413, "over this server's limit of 200,000"),
    (dict(content=(b"x" * 50_000 for _ in range(5)), headers={"Content-Type": "image/png"}), 413,
     "over this server's limit of 200,000 bytes"),  # chunked: no Content-Length, counted as it arrives
    (dict(json={"texts": ["a"]}), 415, "this run takes images"),
    (dict(files=[("field", (None, "value"))]), 400, "no image files"),
])
def test_bad_requests_are_4xx_json_and_the_server_goes_on(trained, image_client, request_, status, fragment):
    answer = image_client.post("/predict", **request_)
    assert answer.status_code == status, answer.text
    assert fragment in answer.json()["error"]
    good = image_client.post("/predict", files=upload(shape_files(trained["image"], 1)))
    assert good.status_code == 200 and image_client.get("/health").status_code == 200


def test_query_and_route_errors(image_client):
    assert image_client.post("/predict?top_k=0").json() == {"error": "top_k must be at least 1, not 0"}
    assert image_client.post("/predict?top_k=x").status_code == 400
    assert image_client.get("/nowhere").status_code == 404 and "error" in image_client.get("/nowhere").json()
    assert image_client.get("/predict").status_code == 405


def test_table_rows_as_csv_or_json(trained, tmp_path):
    run = trained["table"]
    rows = tmp_path / "rows.csv"
    rows.write_text("x1,x2,color\n3.0,3.0,red\n-3.0,-3.0,blue\n0.1,,green\n")
    expected = predict_json(run, rows)
    with TestClient(create_app(run, top_k=10), base_url=LOCAL) as client:
        answer = client.post("/predict", content=rows.read_bytes(), headers={"Content-Type": "text/csv"}).json()
        assert [a["row"] for a in answer] == ["line 2", "line 3", "line 4"]
        close_to(answer, expected)
        as_json = client.post("/predict", json={"rows": [{"x1": 3.0, "x2": 3.0, "color": "red"},
                                                         {"x1": -3, "x2": -3, "color": "blue"},
                                                         {"x1": 0.1, "x2": None, "color": "green"}]}).json()
        assert [a["row"] for a in as_json] == ["row 1", "row 2", "row 3"]
        close_to(as_json, expected)
        bad = client.post("/predict", content=b"x1,x2,color\noops,1,red\n", headers={"Content-Type": "text/csv"})
        assert bad.status_code == 422 and bad.json()["error"] == "body: line 2, column 'x1': 'oops' is not a number"
        assert client.post("/predict", content=b"{", headers={"Content-Type": "application/json"}).status_code == 400
        many = client.post("/predict", json={"rows": [{"x1": 1}] * 65})
        assert many.status_code == 413 and "65 rows" in many.json()["error"]
        assert client.get("/info").json()["input"]["categorical"] == {"color": ["blue", "green", "red"]}


def test_rows_without_a_trained_column_are_refused_in_predicts_words(trained, tmp_path):
    """A JSON row of one column, sent to a run trained on three, was answered with the other two filled in; predict
    refuses a file without them. Serve, `dlcli predict` and Run.predict now say the same, naming every column that
    is missing; a key that only some rows lack is a missing value in those rows, as an empty cell is."""
    import dlcli

    run = trained["table"]
    trained_on = "(the run trained on x1, x2, color)"
    path = tmp_path / "one.csv"
    path.write_text("x1\n0.038\n")
    result = cli("predict", path, "--run", run.name, "--runs-dir", run.parent)
    assert result.exit_code == 2 and result.stderr == f"error: {path}: no columns 'x2', 'color' {trained_on}\n"
    with pytest.raises(dlcli.DlcliError) as err:
        dlcli.load(run).predict([{"x1": 0.038}])
    assert str(err.value) == f"input table: no columns 'x2', 'color' {trained_on}"
    with TestClient(create_app(run), base_url=LOCAL) as client:
        for body in ({"rows": [{"x1": 0.038}]}, {"x1": 0.038}, {"rows": [{"x1": 0.038}, {"x1": 1, "colour": "red"}]}):
            answer = client.post("/predict", json=body)
            assert (answer.status_code, answer.json()) == (422, {"error": f"rows: no columns 'x2', 'color' "
                                                                          f"{trained_on}"}), body
        answer = client.post("/predict", json={"rows": [{"x1": 1, "x2": 2}]})
        assert answer.json() == {"error": f"rows: no column 'color' {trained_on}"}
        answer = client.post("/predict", content=b"x1,colour\n0.038,red\n", headers={"Content-Type": "text/csv"})
        assert (answer.status_code, answer.json()) == (422, {"error": f"body: no columns 'x2', 'color' {trained_on}"})
        rows = [{"x1": 1.0, "x2": 2.0, "color": "red"}, {"x1": 0.5, "color": "blue"}]  # x2 missing in row 2 only
        answer = client.post("/predict", json={"rows": rows})
        assert answer.status_code == 200, answer.text
        close_to(answer.json(), dlcli.load(run).predict(rows))


def test_texts_as_json_or_lines(trained):
    run = trained["text"]
    texts = ["Pizza and bread soup taste", "Robot code and chip data", "Match goal team score"]
    expected = predict_json(run, *texts)
    with TestClient(create_app(run, top_k=10), base_url=LOCAL) as client:
        answer = client.post("/predict", json={"texts": texts}).json()
        assert [a["text"] for a in answer] == texts
        close_to(answer, expected)
        lines = client.post("/predict", content="\n".join(texts).encode(), headers={"Content-Type": "text/plain"})
        close_to(lines.json(), expected)
        empty = client.post("/predict", json={"texts": ["...", "ok"]})
        assert empty.status_code == 422 and empty.json()["error"].startswith("text 1 is empty")
        assert client.post("/predict", json={"texts": [1, 2]}).status_code == 400


@pytest.mark.parametrize("task", ["regression", "multilabel"])
def test_task_runs_answer_as_predict_on_a_real_port(task_runs, tmp_path, task):
    """A regression answers a number per target in its own units, a multilabel run a label set with each label's
    probability: predict's JSON, for CSV and JSON rows; /info names the task and its outputs."""
    run, rows = task_runs[task], TASK_ROWS[task]
    noun, names, headline = TASK_OUTPUTS[task]
    path = write_rows(tmp_path / "rows.csv", rows)
    expected = predict_json(run, path)
    with serving(run) as (url, line):
        assert f"(table, {len(names)} {noun}) at http://127.0.0.1:" in line
        status, info = http(url + "info")
        as_csv = http(url + "predict", path.read_bytes(), "text/csv")
        as_json = http(url + "predict?top_k=1", json.dumps({"rows": rows}).encode())
        bad = http(url + "predict", b"x1,x2,x3,kind\noops,1,1,a\n", "text/csv")
        after = http(url + "predict", path.read_bytes(), "text/csv")
    assert status == 200 and (info["task"], info["outputs"], info["output_names"]) == (task, noun, names)
    assert info["top_k"] is None and info["metrics"]["headline"] == headline  # nothing ranked: top_k does not apply
    assert info["metrics"]["test"][headline] == json.loads((run / "summary.json").read_text())["test"][headline]
    assert bad[0] == 422 and bad[1]["error"] == "body: line 2, column 'x1': 'oops' is not a number"
    for (status, answers), key in ((as_csv, "line"), (as_json, "row"), (after, "line")):
        assert status == 200
        assert [a["row"] for a in answers] == [f"{key} {i + (2 if key == 'line' else 1)}" for i in range(len(rows))]
        assert [set(a) for a in answers] == [set(e) for e in expected]  # predict's keys: no "top"
        got, want = as_outputs(answers, names), as_outputs(expected, names)
        assert abs(got - want).max() <= 1e-6 * max(1.0, abs(want).max())
        if task == "multilabel":
            assert [a["labels"] for a in answers] == [e["labels"] for e in expected]
        else:
            assert 800 < got[:, 0].min() and got[:, 0].max() < 1300  # the price in its own units


def test_concurrent_requests_share_forward_passes():
    import torch

    sizes, entered, gate = [], threading.Event(), threading.Event()

    def model(x):
        entered.set()
        gate.wait(5)  # the first request holds the model while the others queue up
        sizes.append(len(x))
        return x * 2

    batcher = Batcher(model, max_batch=6)
    counts = [1, 2, 1, 3, 1, 1]
    futures = [batcher.submit(torch.full((counts[0], 2), 0.0))]
    assert entered.wait(5)
    futures += [batcher.submit(torch.full((n, 2), float(i))) for i, n in enumerate(counts[1:], 1)]
    gate.set()
    results = [f.result(5) for f in futures]
    batcher.close()
    assert sizes == [1, 6, 2]  # the first alone, then the waiting requests, up to 6 samples a pass, in order
    for i, (n, r) in enumerate(zip(counts, results)):
        assert r.shape == (n, 2) and (r == 2 * i).all()


def test_a_failing_batch_fails_its_requests_only():
    import torch

    def model(x):
        if (x < 0).any():
            raise ValueError("negative")
        return x

    batcher = Batcher(model, max_batch=1)
    bad, good = batcher.submit(torch.tensor([[-1.0]])), batcher.submit(torch.tensor([[1.0]]))
    with pytest.raises(ValueError):
        bad.result(5)
    assert good.result(5).item() == 1.0
    batcher.close()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.must_run_in_ci
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary: apt-get install chromium (.ci/run does)")
def test_the_page_in_a_browser_shows_the_class_of_a_chosen_image(trained, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    run = trained["image"]
    # an image whose folder is its class and which the model gets right, as predict says
    answers = predict_json(run, *shape_files(run, 9))
    chosen = next(a for a in answers if a["top"][0]["label"] == Path(a["image"]).parent.name)
    server = subprocess.Popen([sys.executable, "-m", "dlcli", "serve", run.name, "--runs-dir", run.parent,
                               "--port", "0"], stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        line = server.stderr.readline()  # "serving run ... at http://127.0.0.1:PORT/ ..."
        assert "serving run" in line, line + server.stderr.read()
        url = line.split(" at ")[1].split()[0]
        with playwright.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
            page = browser.new_page()
            page.goto(url)
            page.wait_for_selector("body[data-ready=true]", timeout=10_000)
            assert run.name in page.inner_text("h1")
            page.set_input_files("#file", chosen["image"])
            page.wait_for_selector(".result .label", timeout=10_000)
            labels = page.locator(".result .label").all_inner_texts()
            shown = page.locator(".result .prob").first.inner_text()
            name = page.inner_text(".result .name")
            browser.close()
        assert labels[0] == chosen["top"][0]["label"] == Path(chosen["image"]).parent.name
        assert shown == f"{chosen['top'][0]['probability'] * 100:.1f}%" and name == Path(chosen["image"]).name
        assert len(labels) == 3  # top 3 of 3 classes, as bars
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
    assert server.returncode == 0


@pytest.mark.must_run_in_ci
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary: apt-get install chromium (.ci/run does)")
@pytest.mark.parametrize("task", ["regression", "multilabel"])
def test_the_page_shows_a_number_per_target_or_a_label_set(task_runs, tmp_path, task):
    playwright = pytest.importorskip("playwright.sync_api")
    run, rows = task_runs[task], TASK_ROWS[task]
    noun, names, headline = TASK_OUTPUTS[task]
    path = write_rows(tmp_path / "rows.csv", rows[:1])
    expected = predict_json(run, path)[0]
    with serving(run) as (url, _), playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]", timeout=10_000)
        meta = page.inner_text("#meta")
        top_k_shown = page.locator("#table-input .topk").is_visible()
        page.fill("#csv", path.read_text())
        page.click("#send-csv")
        page.wait_for_selector(".result .label", timeout=10_000)
        labels = page.locator(".result .label").all_inner_texts()
        numbers = page.locator(".result .number").all_inner_texts()
        probs = page.locator(".result .prob").all_inner_texts()
        chosen = page.locator(".result .row.on .label").all_inner_texts()
        shown_set = page.locator(".result .set").all_inner_texts()
        browser.close()
    assert f"table {task} model, {noun}: {', '.join(names)} · test {headline} " in meta and not top_k_shown
    if task == "regression":
        assert labels == names and not probs
        assert [float(v) for v in numbers] == pytest.approx([expected["prediction"][n] for n in names], rel=1e-5)
    else:  # every label, most probable first, with its probability; the predicted ones marked
        ranked = sorted(names, key=lambda n: -expected["probabilities"][n])
        assert labels == ranked and not numbers and sorted(chosen) == sorted(expected["labels"])
        assert probs == [f"{expected['probabilities'][n] * 100:.1f}%" for n in ranked]
        assert shown_set == [f"predicted: {', '.join(expected['labels']) or 'no label'}"]


def test_serve_errors_are_one_line(trained, tmp_path):
    result = cli("serve", "nope", "--runs-dir", trained["image"].parent)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and "nope" in result.stderr
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = cli("serve", trained["table"].name, "--runs-dir", trained["table"].parent, "--port", port)
    assert result.exit_code == 2 and f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_serve_prints_where_it_listens(trained):
    """`dlcli serve` as typed: the first line names the address; SIGTERM stops it cleanly."""
    server = subprocess.Popen([sys.executable, "-m", "dlcli", "serve", trained["text"].name, "--runs-dir",
                               trained["text"].parent, "--port", "0"], stderr=subprocess.PIPE, text=True)
    try:
        line = server.stderr.readline()
        assert "serving run" in line and "(text, 3 classes) at http://127.0.0.1:" in line, line
        import urllib.request

        url = line.split(" at ")[1].split()[0]
        request = urllib.request.Request(url + "predict?top_k=1", data=json.dumps({"texts": ["goal team"]}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())[0]["top"][0]["label"] == "sport"
    finally:
        server.terminate()
        server.wait(10)
    assert server.returncode == 0


# ---------------------------------------------------------------- the command line's limits, on a real server

# Imported first by the server process (sitecustomize on its PYTHONPATH): every forward pass of the real model
# appends its batch size to a file, and the first one after the test creates `<file>.hold` holds the model thread a
# second, so that the requests sent meanwhile queue up behind it.
COUNT_BATCHES = """
import os, time
import dlcli.loaded

real = dlcli.loaded.LoadedRun.logits

def logits(self, x, batch_size=None):
    path = os.environ["DLCLI_TEST_BATCHES"]
    with open(path, "a") as f:
        f.write(f"{len(x)}\\n")
    try:
        os.remove(path + ".hold")
        time.sleep(1.0)
    except FileNotFoundError:
        pass
    return real(self, x, batch_size)

dlcli.loaded.LoadedRun.logits = logits
"""


def test_command_line_limits_and_invert_on_a_real_server(trained, tmp_path):
    """`dlcli serve RUN --max-batch 2 --max-bytes 5000 --max-pixels 1600 --max-items 3` on the shapes run: each
    limit holds as typed, and ?invert=true answers as `dlcli predict --invert` does."""
    from tests.test_serve_hardening import IMAGE, SOURCE, Server, at_once, multipart, png

    run = trained["image"]
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(COUNT_BATCHES)
    batches = tmp_path / "batches.txt"
    env = {"PYTHONPATH": f"{hooks}{os.pathsep}{SOURCE}", "DLCLI_TEST_BATCHES": str(batches)}
    picture = next(f for f in shape_files(run, 30) if Image.open(f).size == (40, 40))
    body = picture.read_bytes()
    assert len(body) < 5000
    server = Server(run, "--max-batch", "2", "--max-bytes", "5000", "--max-pixels", "1600", "--max-items", "3",
                    env=env)
    try:
        limits = server.call("/info")[2]["limits"]
        assert (limits["max_bytes"], limits["max_pixels"], limits["max_items"]) == (5000, 1600, 3)

        answered = {}
        for invert in (False, True):  # predict's probabilities, to float precision
            expected = predict_json(run, picture, *(["--invert"] if invert else []))[0]["top"]
            status, _, answer = server.call(f"/predict?top_k=3&invert={str(invert).lower()}", body, IMAGE)
            assert status == 200, answer
            answered[invert] = {t["index"]: t["probability"] for t in answer[0]["top"]}
            assert answered[invert] == pytest.approx({t["index"]: t["probability"] for t in expected}, abs=1e-6)
        assert max(abs(answered[True][i] - answered[False][i]) for i in range(3)) > 1e-3  # inverting counts

        status, _, answer = server.call("/predict", b"\x89PNG" + bytes(6000), IMAGE)
        assert status == 413, answer
        assert answer["error"] == "the request body (6,004 bytes) is over this server's limit of 5,000 bytes " \
                                  "(--max-bytes)"
        status, _, answer = server.call("/predict", png((41, 40)), IMAGE)
        assert status == 413, answer
        assert answer["error"] == "body: 41 x 40 = 1,640 pixels, over this server's limit of 1,600 (--max-pixels)"
        small = png((8, 8))
        status, _, answer = server.call("/predict", *multipart([("files", (f"{i}.png", small)) for i in range(4)]))
        assert status == 413 and "(--max-items)" in answer["error"] and "3" in answer["error"], answer
        status, _, answer = server.call("/predict", *multipart([("files", (f"{i}.png", small)) for i in range(3)]))
        assert status == 200 and len(answer) == 3

        # Seven requests of one image while the model thread is held: they queue, then run 2 by 2 (--max-batch).
        seen = len(batches.read_text().split())
        (tmp_path / "batches.txt.hold").touch()
        answers = at_once(7, lambda: server.call("/predict", small, IMAGE))
        assert {a[0] for a in answers} == {200}
        sizes = [int(n) for n in batches.read_text().split()[seen:]]
        assert sum(sizes) == 7 and max(sizes) == 2, sizes
        server.stop()
    finally:
        if server.process.poll() is None:
            server.process.kill()
