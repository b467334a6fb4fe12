"""`dlcli serve` on loopback: throughput and latency of single-image requests at 1, 8 and 32 concurrent clients,
next to the same work done in-process, with and without batching of concurrent requests.

    python benchmarks/serve.py                         # seed 000's CNN on 28x28 grayscale PNGs, 5 s per cell
    python benchmarks/serve.py --model cnn64           # a heavier CNN on 64x64 RGB PNGs
    python benchmarks/serve.py --seconds 2 --clients 1 8   # a quick look
    python benchmarks/serve.py --run RUN --runs-dir DIR    # an existing image run instead of a fresh one
    python benchmarks/serve.py --json

The model: a run of seed 000's CNN (225,034 parameters, configs/mnist_cnn.yaml's layers; or with --model cnn64 the
cnn preset with channels [32, 64, 128] on 3x64x64) trained for one epoch on synthetic data in a temporary runs folder
(the weights do not change the timings). The request: one PNG of the run's size (random pixels) as
multipart/form-data, top 5, as the page and curl send it.

  in-process   one thread doing what a request does, without HTTP: decode the PNG bytes with dlcli's decoder,
               the model on a batch of one, softmax and top-5, in a loop (the floor for one request at a time);
  serve B=1    `dlcli serve --max-batch 1`: each request runs the model alone, one after another;
  serve B=32   `dlcli serve --max-batch 32` (the default): requests waiting while the model runs go through it
               together in the next pass.
Clients are threads of this process, each with its own keep-alive HTTP/1.1 connection, sending requests back to
back for --seconds after one second of warm-up; latency is each request's round trip. Client threads share the
CPU with the server (on a small machine they take a real share of it: compare cells of one run, not absolute
figures across machines).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import ROOT, machine  # noqa: E402

BOUNDARY = "dlcli-bench-boundary"


SHAPES = {"seed000": [1, 28, 28], "cnn64": [3, 64, 64]}


def make_run(work: Path, which: str) -> tuple[str, Path]:
    import yaml

    if which == "seed000":
        model = yaml.safe_load((ROOT / "configs" / "mnist_cnn.yaml").read_text())["model"]
    else:
        model = {"type": "cnn", "channels": [32, 64, 128], "padding": "same", "hidden": [128]}
    cfg = {"name": f"serve_bench_{which}", "seed": 0, "model": model,
           "data": {"dataset": "synthetic", "shape": SHAPES[which], "num_classes": 10, "train_samples": 500,
                    "test_samples": 100, "val_split": 0.0},
           "optimizer": {"name": "adam", "lr": 0.001}, "train": {"epochs": 1, "batch_size": 64}}
    (work / "bench.yaml").write_text(yaml.safe_dump(cfg))
    runs = work / "runs"
    out = subprocess.run([sys.executable, "-m", "dlcli", "train", str(work / "bench.yaml"), "--runs-dir", str(runs),
                          "--quiet"], capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1], runs


def png_bytes(shape) -> bytes:
    """A PNG of the run's own channels and size (decoding it needs no resize)."""
    import numpy as np
    from PIL import Image

    c, h, w = shape
    pixels = np.random.default_rng(0).integers(0, 256, (h, w, c), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels[:, :, 0] if c == 1 else pixels, "L" if c == 1 else "RGB").save(out, "PNG")
    return out.getvalue()


def multipart(data: bytes) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"digit.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()


def summarise(latencies: list[float], seconds: float) -> dict:
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {"requests": len(ordered), "per_second": len(ordered) / seconds, "p50_ms": pick(0.50),
            "p99_ms": pick(0.99), "mean_ms": statistics.fmean(ordered) * 1000}


def in_process(run: Path, data: bytes, seconds: float) -> dict:
    import torch

    from dlcli.data.images import load_image
    from dlcli.loaded import load_run
    from dlcli.predict import ranked

    loaded = load_run(run, "best", "cpu")
    shape = tuple(loaded.input_shape)

    def once():
        x = load_image(io.BytesIO(data), shape)[None]
        return ranked(torch.softmax(loaded.logits(x), dim=1), loaded.classes, 5)

    end = time.perf_counter() + 1.0
    while time.perf_counter() < end:
        once()
    latencies, start = [], time.perf_counter()
    while (now := time.perf_counter()) - start < seconds:
        once()
        latencies.append(time.perf_counter() - now)
    return summarise(latencies, time.perf_counter() - start)


def start_server(run_id: str, runs: Path, max_batch: int):
    server = subprocess.Popen([sys.executable, "-m", "dlcli", "serve", run_id, "--runs-dir", str(runs), "--port", "0",
                               "--max-batch", str(max_batch)], stderr=subprocess.PIPE, text=True)
    line = server.stderr.readline()
    if "serving run" not in line:
        server.kill()
        raise SystemExit(f"dlcli serve did not start: {line}{server.stderr.read()}")
    port = int(line.split(" at http://127.0.0.1:")[1].split("/")[0])
    return server, port


def load(port: int, body: bytes, clients: int, seconds: float) -> dict:
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    latencies: list[list[float]] = [[] for _ in range(clients)]
    phase = {"measure_from": 0.0, "stop_at": 0.0}
    errors = []

    def client(i: int):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            conn.connect()  # http.client sends headers and body in two writes: without NODELAY, Nagle's algorithm
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # and delayed ACKs add 40 ms a request
            while True:
                t0 = time.perf_counter()
                if t0 >= phase["stop_at"]:
                    return
                conn.request("POST", "/predict?top_k=5", body=body, headers=headers)
                response = conn.getresponse()
                answer = response.read()
                if response.status != 200:
                    errors.append(answer[:200])
                    return
                if t0 >= phase["measure_from"]:
                    latencies[i].append(time.perf_counter() - t0)
        except OSError as err:
            errors.append(str(err))
        finally:
            conn.close()

    now = time.perf_counter()
    phase["measure_from"], phase["stop_at"] = now + 1.0, now + 1.0 + seconds
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"requests failed: {errors[0]}")
    return summarise([x for per in latencies for x in per], seconds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per cell")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32], help="--max-batch values to serve with")
    parser.add_argument("--model", choices=sorted(SHAPES), default="seed000", help="the run trained for the "
                        "benchmark: seed000 (seed 000's CNN, 1x28x28) or cnn64 (cnn preset [32, 64, 128], 3x64x64)")
    parser.add_argument("--run", help="an existing image run instead (its own shape)")
    parser.add_argument("--runs-dir", help="where --run lives")
    parser.add_argument("--threads", type=int, default=1, help="torch threads, in-process and in the server "
                        "(OMP_NUM_THREADS; 1 suits batches of one on a shared CPU)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before torch is imported here; the server inherits it

    work = Path(tempfile.mkdtemp(prefix="dlcli-bench-serve-"))
    try:
        if args.run:
            from dlcli import rundirs as run_dirs

            run = run_dirs.resolve_run(run_dirs.runs_dir(args.runs_dir), args.run)
            run_id, runs = run.name, run.parent
        else:
            run_id, runs = make_run(work, args.model)
        data = png_bytes(json.loads((runs / run_id / "data.json").read_text())["input_shape"])
        body = multipart(data)
        rows = [{"setup": "in-process", "clients": 1, **in_process(runs / run_id, data, args.seconds)}]
        for batch in args.batches:
            server, port = start_server(run_id, runs, batch)
            try:
                for clients in args.clients:
                    rows.append({"setup": f"serve B={batch}", "clients": clients,
                                 **load(port, body, clients, args.seconds)})
            finally:
                server.terminate()
                server.wait(30)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps({"machine": machine(), "run": run_id, "seconds": args.seconds, "threads": args.threads,
                          "png_bytes": len(data), "rows": rows}, indent=2))
        return
    print(f"{machine()}; run {run_id}; {len(data):,}-byte PNG; {args.seconds:g} s per cell; torch threads "
          f"{args.threads}")
    print("| setup | clients | requests/s | p50 ms | p99 ms |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['setup']} | {r['clients']} | {r['per_second']:,.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |")


if __name__ == "__main__":
    main()
