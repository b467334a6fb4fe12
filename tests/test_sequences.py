"""`dataset: sequences`: .npz, wide and long files read into the same tensors, the long layout's label rule,
normalisation checked against numpy, sequence augmentations (training only), and predict answering as evaluate."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dlcli.augment import SEQUENCE_AUGMENTS
from dlcli.data.catalog import parse_data
from dlcli.tasks import parse_task


def make_series(n=60, length=24, channels=1, unequal=False, seed=0):
    """Three classes of noisy sine waves (1, 2 or 3 periods); unequal: each series keeps 12..length steps."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    steps = np.linspace(0, 1, length)
    x = np.stack([np.stack([np.sin(2 * np.pi * (k + 1) * steps + c) for c in range(channels)], 1) for k in y])
    x = (x + 0.2 * rng.standard_normal(x.shape)).round(4).astype(np.float32)
    lengths = rng.integers(12, length + 1, n) if unequal else np.full(n, length)
    return x, y, lengths


NAMES = np.array(["low", "mid", "high"])


def write_npz(path, x, y, lengths):
    np.savez(path, x=x, y=NAMES[y], lengths=lengths)
    return str(path)


def write_wide(path, x, y, lengths):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["label", *[f"t{j}" for j in range(x.shape[1])]])
        for i in range(len(x)):
            w.writerow([NAMES[y[i]], *[f"{v:.4f}" for v in x[i, : lengths[i], 0]], *[""] * (x.shape[1] - lengths[i])])
    return str(path)


def long_rows(x, y, lengths, seed=1):
    """One row per step, ids as text in the series' order, each series' steps shuffled (time_column puts them back
    in order)."""
    rows = [[f"s{i:03d}", j * 10, NAMES[y[i]], *[float(v) for v in x[i, j]]]
            for i in range(len(x)) for j in range(lengths[i])]
    order = np.random.default_rng(seed).permutation(len(rows))
    return sorted((rows[k] for k in order), key=lambda r: r[0])


def write_long(path, x, y, lengths, rows=None):
    header = ["sid", "when", "label", *[f"ch{c}" for c in range(x.shape[2])]]
    rows = long_rows(x, y, lengths) if rows is None else rows
    if str(path).endswith(".parquet"):
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({h: [r[k] for r in rows] for k, h in enumerate(header)}), path)
    else:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
    return str(path)


def bundle(task=None, **data):
    entry = parse_data({"dataset": "sequences", "val_split": 0.2, "test_split": 0.2, **data})
    return entry.read(0, task=parse_task(task))


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and bool(torch.equal(torch.isnan(a), torch.isnan(b))) and \
        bool(torch.equal(torch.nan_to_num(a), torch.nan_to_num(b)))


def test_every_layout_reads_the_same_tensors(tmp_path):
    x, y, lengths = make_series(unequal=True)
    got = {"npz": bundle(train_file=write_npz(tmp_path / "s.npz", x, y, lengths)),
           "wide": bundle(train_file=write_wide(tmp_path / "wide.csv", x, y, lengths)),
           "long_csv": bundle(train_file=write_long(tmp_path / "long.csv", x, y, lengths), id_column="sid",
                              time_column="when"),
           "long_parquet": bundle(train_file=write_long(tmp_path / "long.parquet", x, y, lengths), id_column="sid",
                                  time_column="when")}
    first = got["npz"]
    assert first.input_shape == (24, 1) and first.classes == ["high", "low", "mid"]
    assert first.preprocessing["padded"] is True
    for name, b in got.items():
        for split in ("train", "val", "test"):
            assert same(getattr(b, split).x, getattr(first, split).x), (name, split)
            assert torch.equal(getattr(b, split).y, getattr(first, split).y), (name, split)
    # independently: each training series is one of the generated ones, NaN exactly after its own length
    for row in first.train.x:
        i = next(i for i in range(len(x)) if np.allclose(np.nan_to_num(row[:, 0].numpy()),
                                                         np.where(np.arange(24) < lengths[i], x[i, :, 0], 0)))
        assert int((~torch.isnan(row[:, 0])).sum()) == lengths[i]


def test_multichannel_npz_and_long_agree_and_max_length_cuts(tmp_path):
    x, y, lengths = make_series(channels=3, unequal=True, seed=2)
    a = bundle(train_file=write_npz(tmp_path / "m.npz", x, y, lengths), max_length=20)
    b = bundle(train_file=write_long(tmp_path / "m.csv", x, y, lengths), id_column="sid", time_column="when",
               max_length=20)
    assert a.input_shape == b.input_shape == (20, 3)
    assert same(a.train.x, b.train.x) and torch.equal(a.train.y, b.train.y)
    assert b.preprocessing["channels"] == ["ch0", "ch1", "ch2"]
    assert any("max_length 20" in note for note in a.notes)


def test_long_label_varying_within_an_id_is_refused(tmp_path, cli, write_config):
    x, y, lengths = make_series(n=9)
    rows = long_rows(x, y, lengths)
    changed = next(k for k, r in enumerate(rows) if r[0] == "s004")
    rows[changed][2] = "low" if rows[changed][2] != "low" else "high"
    path = write_long(tmp_path / "bad.csv", x, y, lengths, rows)
    cfg = {"data": {"dataset": "sequences", "train_file": path, "id_column": "sid"}, "model": {"type": "lstm"}}
    result = cli("train", write_config(cfg), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2
    assert "id 's004' has label" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_gap_inside_a_series_is_an_error_naming_it(tmp_path):
    x, y, lengths = make_series(n=9)
    x[5, 3, 0] = np.nan
    with pytest.raises(Exception, match=r"series 5: step 4 of 24 has no value"):
        bundle(train_file=write_npz(tmp_path / "gap.npz", x, y, lengths))


def test_channel_statistics_and_series_znorm_match_numpy(tmp_path):
    x, y, lengths = make_series(channels=2, unequal=True, seed=3)
    x[:, :, 1] = x[:, :, 1] * 5 + 3
    path = write_npz(tmp_path / "n.npz", x, y, lengths)
    b = bundle(train_file=path, normalize="channel")
    train = b.train.x.numpy()
    for c in range(2):  # every present step of every training series, gathered one series at a time
        values = np.concatenate([s[: int((~np.isnan(s[:, c])).sum()), c] for s in train]).astype(np.float64)
        assert b.normalizer.mean[c] == pytest.approx(values.mean(), rel=1e-6)
        assert b.normalizer.std[c] == pytest.approx(values.std(), rel=1e-6)

    z = bundle(train_file=path, normalize="series")
    out = z.normalizer(z.train.x).numpy()
    for raw, got in zip(z.train.x.numpy(), out):
        n = int((~np.isnan(raw[:, 0])).sum())
        for c in range(2):
            v = raw[:n, c].astype(np.float64)
            np.testing.assert_allclose(got[:n, c], (v - v.mean()) / v.std(), rtol=1e-4, atol=1e-5)
        assert np.isnan(got[n:]).all()
    flat = bundle(train_file=path, normalize="none")
    assert same(flat.normalizer(flat.train.x), flat.train.x)


def test_sequence_augmentations_keep_padding_and_stay_inside_each_series():
    torch.manual_seed(0)
    x = torch.arange(40, dtype=torch.float32).view(2, 20, 1).repeat(1, 1, 2)
    x[1, 12:] = float("nan")  # the second series ends after 12 steps
    aug = lambda spec: SEQUENCE_AUGMENTS.parse(spec)  # noqa: E731
    for spec in ("jitter", {"scaling": 0.2}, {"window_slice": 0.5}):
        out = aug(spec)(x)
        assert torch.equal(torch.isnan(out), torch.isnan(x)), spec
        assert not torch.allclose(torch.nan_to_num(out), torch.nan_to_num(x)), spec
    assert same(aug({"window_slice": 1.0})(x), x)
    assert same(aug({"jitter": {"sigma": 0.5, "p": 0.0}})(x), x)
    sliced = aug({"window_slice": 0.5})(x)
    for i, n in ((0, 20), (1, 12)):  # a stretched window of the series' own values: increasing, within its range
        s = sliced[i, :n, 0]
        assert (s.diff() >= 0).all() and s.min() >= x[i, 0, 0] and s.max() <= x[i, n - 1, 0]
        assert s[-1] - s[0] == pytest.approx(round(n * 0.5) - 1, abs=1e-4)


def test_augmentations_change_training_batches_only(tmp_path, cli, write_config, monkeypatch):
    from dlcli.augment import Jitter

    x, y, lengths = make_series(n=48)
    path = write_npz(tmp_path / "s.npz", x, y, lengths)
    calls = []
    original = Jitter.__call__

    def recording(self, batch):
        out = original(self, batch)
        calls.append(bool((out != batch).any()))
        return out

    monkeypatch.setattr(Jitter, "__call__", recording)
    cfg = {"data": {"dataset": "sequences", "train_file": path, "augment": [{"jitter": 0.1}]},
           "model": {"type": "lstm", "hidden_size": 8}, "train": {"epochs": 1, "batch_size": 16}}
    assert cli("train", write_config(cfg), "--runs-dir", tmp_path / "runs").exit_code == 0
    assert calls and all(calls)  # every training batch, each changed
    seen = len(calls)
    assert cli("evaluate", "latest", "--runs-dir", tmp_path / "runs").exit_code == 0
    assert cli("predict", path, "--runs-dir", tmp_path / "runs").exit_code == 0
    assert len(calls) == seen
    refused = cli("train", write_config({**cfg, "data": {**cfg["data"], "augment": ["hflip"]}}),
                  "--runs-dir", tmp_path / "runs")
    assert refused.exit_code == 2 and "unknown sequence augmentation 'hflip'" in refused.stderr


def test_padded_series_train_a_gru_and_predict_answers_as_evaluate(tmp_path, cli, write_config):
    x, y, lengths = make_series(n=90, unequal=True, seed=4)
    train = write_npz(tmp_path / "train.npz", x[:60], y[:60], lengths[:60])
    test = {"npz": write_npz(tmp_path / "test.npz", x[60:], y[60:], lengths[60:]),
            "wide": write_wide(tmp_path / "test.csv", x[60:], y[60:], lengths[60:]),
            "long": write_long(tmp_path / "test.parquet", x[60:], y[60:], lengths[60:])}
    cfg = {"seed": 0, "data": {"dataset": "sequences", "train_file": train, "test_file": test["npz"],
                               "normalize": "series", "id_column": "sid", "time_column": "when"},
           "model": {"type": "gru", "hidden_size": 16}, "optimizer": {"name": "adam", "lr": 0.03},
           "train": {"epochs": 15, "batch_size": 20}}
    runs = tmp_path / "runs"
    assert cli("train", write_config(cfg), "--runs-dir", runs).exit_code == 0
    info = json.loads(next(runs.iterdir()).joinpath("data.json").read_text())
    assert info["preprocessing"]["padded"] is True and info["normalization"]["series"] is True
    report = json.loads(cli("evaluate", "latest", "--runs-dir", runs, "--json").stdout)
    answers = {}
    for layout, path in test.items():
        result = cli("predict", path, "--runs-dir", runs, "--json")
        assert result.exit_code == 0, result.stderr
        answers[layout] = [a["top"][0]["label"] for a in json.loads(result.stdout)]
    assert answers["npz"] == answers["wide"] == answers["long"]
    accuracy = float(np.mean(np.asarray(answers["npz"]) == NAMES[y[60:]]))
    assert accuracy == pytest.approx(report["accuracy"]) and accuracy > 0.6

    from fastapi.testclient import TestClient

    from dlcli.serve.app import create_app

    with TestClient(create_app(next(runs.iterdir())), base_url="http://127.0.0.1") as client:
        one = client.post("/predict", json=[float(v) for v in x[60, : lengths[60], 0]])  # a list of numbers
        assert one.status_code == 200 and one.json()[0]["top"][0]["label"] == answers["npz"][0]
        rows = [[[float(v)] for v in x[i, : lengths[i], 0]] for i in (61, 62)]  # [channel values] rows
        many = client.post("/predict", json={"series": rows})
        assert [a["top"][0]["label"] for a in many.json()] == answers["npz"][1:3]
        bad = client.post("/predict", json=[[1.0, 2.0], [3.0, 4.0]])
        assert bad.status_code == 422 and "1 channel value(s)" in bad.json()["error"]
    import dlcli

    padded = np.where(np.arange(24)[None, :, None] < lengths[60:, None, None], x[60:], np.nan)  # NaN after each end
    given = dlcli.load(next(runs.iterdir())).predict(padded)  # the Python API, an array (N, T, C)
    assert [a["top"][0]["label"] for a in given] == answers["npz"] and given[1]["series"] == "array[1]"
    exported = cli("export", "latest", "--runs-dir", runs)  # checks the graph against PyTorch on the test series
    assert exported.exit_code == 0, exported.stderr


def test_predict_refuses_a_short_series_for_a_run_that_never_saw_padding(tmp_path):
    from dlcli.data.sequences import encode_series

    x, y, lengths = make_series(n=6)
    entry = parse_data({"dataset": "sequences", "train_file": "unused.npz"})
    state = {"length": 24, "channels": ["channel_0"], "padded": False}
    long_enough = write_npz(tmp_path / "ok.npz", x, y, lengths)
    assert encode_series(long_enough, state, entry)[0].shape == (6, 24, 1)
    short = write_npz(tmp_path / "short.npz", x[:, :10], y, np.full(6, 10))
    with pytest.raises(Exception, match="series 0: 10 steps, but the run trained on series of exactly 24"):
        encode_series(short, state, entry)
    padded, _ = encode_series(short, {**state, "padded": True}, entry)
    assert padded.shape == (6, 24, 1) and np.isnan(padded[:, 10:]).all() and not np.isnan(padded[:, :10]).any()
    with pytest.raises(Exception, match="1 channel\\(s\\); run trained on 2"):
        encode_series(long_enough, {**state, "channels": ["a", "b"]}, entry)


def test_regression_from_a_wide_table(tmp_path, cli, write_config):
    rng = np.random.default_rng(5)
    amplitude = rng.uniform(0.5, 3.0, 80).round(3)
    x = (amplitude[:, None] * np.sin(np.linspace(0.3, 6, 16))[None]).astype(np.float32)[:, :, None]
    path = tmp_path / "amp.csv"
    write_wide(path, x, np.zeros(80, dtype=int), np.full(80, 16))
    text = path.read_text().splitlines()
    path.write_text("\n".join([text[0].replace("label", "amp")] + [f"{a:.3f}" + line[line.index(","):]
                                                                   for a, line in zip(amplitude, text[1:])]) + "\n")
    b = bundle(task="regression", train_file=str(path), label_column="amp")
    assert b.classes == ["amp"] and b.train.y.shape == (len(b.train), 1)
    for row, target in zip(b.train.x, b.train.y):  # each series' target is its own row's amplitude
        i = int(np.argmin(np.abs(x[:, 0, 0] - float(row[0, 0]))))
        assert float(target[0]) == pytest.approx(amplitude[i], abs=1e-6)
    cfg = {"seed": 0, "task": "regression",
           "data": {"dataset": "sequences", "train_file": str(path), "label_column": "amp"},
           "model": {"type": "lstm", "hidden_size": 8}, "train": {"epochs": 2, "batch_size": 32}}
    result = cli("train", write_config(cfg), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.stderr
    info = json.loads(next((tmp_path / "runs").iterdir()).joinpath("data.json").read_text())
    same_split = bundle(task="regression", train_file=str(path), label_column="amp", val_split=0.1, test_split=0.1)
    assert info["task"]["type"] == "regression" and info["task"]["mean"][0] == pytest.approx(
        float(np.mean([amplitude[int(np.argmin(np.abs(x[:, 0, 0] - float(r[0, 0]))))] for r in same_split.train.x])),
        rel=1e-5)


def test_init_writes_a_sequences_config_for_each_layout(tmp_path, cli):
    import yaml

    x, y, lengths = make_series(n=30, unequal=True)
    files = {"npz": write_npz(tmp_path / "s_train.npz", x, y, lengths),
             "wide": write_wide(tmp_path / "wide.csv", x, y, lengths),
             "long": write_long(tmp_path / "long.csv", x, y, lengths,
                                rows=sorted(long_rows(x, y, lengths), key=lambda r: (r[0], r[1])))}
    text = Path(files["long"]).read_text()
    Path(files["long"]).write_text(text.replace("sid,when,", "sid,step,", 1))  # a time column init knows by name
    write_npz(tmp_path / "s_test.npz", x[:6], y[:6], lengths[:6])
    for layout, path in files.items():
        result = cli("init", path, "-o", tmp_path / f"{layout}.yaml")
        assert result.exit_code == 0, result.stderr
        cfg = yaml.safe_load((tmp_path / f"{layout}.yaml").read_text())
        assert cfg["data"]["dataset"] == "sequences" and cfg["model"]["type"] == "resnet1d", layout
        assert cfg["data"]["val_split"] == 0 and cfg["train"]["epochs"] == 200, layout  # 30 series: no cut
        assert f"({layout}), 30 series, 3 classes" in result.stdout + result.stderr
    long = yaml.safe_load((tmp_path / "long.yaml").read_text())["data"]
    assert (long["id_column"], long["time_column"]) == ("sid", "step")
    assert yaml.safe_load((tmp_path / "npz.yaml").read_text())["data"]["test_file"].endswith("s_test.npz")


def test_data_check_reports_gaps_constant_series_lengths_and_classes(tmp_path, cli):
    x, y, lengths = make_series(n=30, unequal=True)
    x[3, :] = 1.5  # constant (over its own steps)
    fine = write_npz(tmp_path / "fine.npz", x, y, lengths)
    report = json.loads(cli("data", "check", fine, "--json").stdout)
    found = {f["check"]: f for f in report["findings"]}
    assert report["ok"] and found["constant"]["severity"] == "warning" and "series 3" in found["constant"]["message"]
    assert f"lengths {lengths.min()} to {lengths.max()} steps" in found["lengths"]["message"]
    counts = report["classes"]["counts"]
    assert {split: sum(c.values()) for split, c in counts.items()} == {"train": 24, "val": 3, "test": 3}
    assert [sum(c[name] for c in counts.values()) for name in ("high", "low", "mid")] == [10, 10, 10]
    assert report["sequences"]["train"]["series"] == 30
    x[7, 2, 0] = np.nan
    gapped = write_npz(tmp_path / "gap.npz", x, y, lengths)
    result = cli("data", "check", gapped, "--json")
    report = json.loads(result.stdout)
    nan = next(f for f in report["findings"] if f["check"] == "nan")
    assert not report["ok"] and nan["severity"] == "error" and "series 7, step 3" in nan["message"]
