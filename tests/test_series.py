"""dataset: series and task: forecast: windows and chronological splits, metrics against numpy, frequencies and
timestamps, and a small train -> evaluate -> predict on synthetic seasonal series."""

import json

import numpy as np
import pytest
import torch

from dlcli.config import validate_config
from dlcli.data.series import Frequency, cut_windows, infer_frequency, read_series
from dlcli.errors import DataError
from dlcli.tasks import parse_task


def monthly_csv(path, series=((100, 20), (50, 5), (300, 40)), n=96, noise=2.0, seed=0, month_end=False,
                start="2010-01"):
    """Trend + a 12-month season + noise per store; dates month starts (or month ends)."""
    rng = np.random.default_rng(seed)
    months = np.arange(np.datetime64(start, "M"), np.datetime64(start, "M") + n)
    days = (months + 1).astype("datetime64[D]") - 1 if month_end else months.astype("datetime64[D]")
    t = np.arange(n)
    lines = ["date,store,sales,price"]
    for s, (level, amp) in enumerate(series):
        y = level + 0.5 * t + amp * np.sin(2 * np.pi * t / 12) + rng.normal(0, noise, n)
        lines += [f"{d},s{s},{v:.4f},{1 + 0.01 * i:.2f}" for i, (d, v) in enumerate(zip(days, y))]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def series_cfg(train_file, **data):
    return {"name": "fc", "seed": 0,
            "data": {"dataset": "series", "train_file": train_file, "time_column": "date", "label_column": "sales",
                     "id_column": "store", "lookback": 24, "horizon": 12, **data},
            "model": {"type": "mlp", "hidden": [32]}, "optimizer": {"name": "adam", "lr": 0.003},
            "train": {"epochs": 15, "batch_size": 32, "device": "cpu"}}


def test_windows_and_splits_match_hand_computed_indices():
    # series of 10, 7 and 4 steps, lookback 3, horizon 2, one validation window: global starts 0, 10, 17
    w = cut_windows([10, 7, 4], lookback=3, horizon=2, val_windows=1)
    assert w.test[0].tolist() == [8, 15] and w.test[1].tolist() == [0, 1]  # the last 2 steps of each
    assert w.val[0].tolist() == [6, 13] and w.val[1].tolist() == [0, 1]  # the 2 before them
    assert w.train[0].tolist() == [3, 4] and w.train[1].tolist() == [0, 0]  # targets end by step 6; series 1 none
    assert any("1 series shorter than lookback + horizon = 5" in n for n in w.notes)  # the 4-step one
    w = cut_windows([13], lookback=3, horizon=2, val_windows=2, stride=2)  # training targets end by step 7
    assert w.test[0].tolist() == [11] and w.val[0].tolist() == [9, 7] and w.train[0].tolist() == [3, 5]


@pytest.mark.parametrize("val_windows", [0, 1, 3])
def test_no_window_reads_or_forecasts_past_its_split(val_windows):
    lengths = [40, 23, 61, 17]
    L, H = 5, 4
    w = cut_windows(lengths, L, H, val_windows)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    first_val = {i: starts[i] + n - H - val_windows * H for i, n in enumerate(lengths)}
    first_test = {i: starts[i] + n - H for i, n in enumerate(lengths)}
    for origin, s in zip(*w.train):
        assert origin - L >= starts[s] and origin + H <= first_val[s]  # inside the series, targets before val
    for origin, s in zip(*w.val) if w.val else ():
        assert origin - L >= starts[s] and origin >= first_val[s] and origin + H <= first_test[s]
    for origin, s in zip(*w.test):
        assert origin == first_test[s] and origin + H == starts[s] + lengths[s]
    trained = {(o, s) for o, s in zip(*w.train)}
    assert len(trained) == sum(max(0, n - H - val_windows * H - H - L + 1) for n in lengths)


def test_windows_gather_the_scaled_history_and_the_targets_in_their_units(tmp_path):
    path = monthly_csv(tmp_path / "m.csv", n=60)
    entry = validate_config(series_cfg(path, lookback=6, horizon=3, normalize="series")).data
    bundle = read_series(entry, 0)
    values = {}
    for line in open(path).read().splitlines()[1:]:
        d, s, v, _ = line.split(",")
        values.setdefault(s, []).append(float(v))
    y1 = np.array(values["s1"])
    train_part = y1[:60 - 3 - 3]  # the training part: before the validation and test horizons
    mean, std = train_part.mean(), train_part.std()
    test = bundle.test
    assert len(test) == 3 and bundle.input_shape == (6, 1)
    x, y = test.x.cpu(), test.y.cpu()
    assert x.shape == (3, 6, 1)
    np.testing.assert_allclose(x[1, :, 0].numpy(), (y1[51:57] - mean) / std, rtol=1e-5, atol=1e-5)
    task = parse_task("forecast").bind(bundle.target, bundle.classes)
    parts = task._parts(y)
    np.testing.assert_allclose(parts["y"][1, :, 0].numpy(), y1[57:60], rtol=1e-6)
    np.testing.assert_allclose(parts["naive"][1, :, 0].numpy(), y1[45:48], rtol=1e-6)  # one season (12) before
    scale = np.abs(train_part[12:] - train_part[:-12]).mean()
    assert parts["scale"][1, 0].item() == pytest.approx(scale, rel=1e-5)
    assert parts["mean"][1, 0].item() == pytest.approx(mean, rel=1e-5)
    assert bundle.classes == ["sales[t+1]", "sales[t+2]", "sales[t+3]"]
    # a training batch gathers the same windows by index as the split's views
    xb, yb = next(bundle.train.batches([torch.tensor([0, 5])]))
    assert torch.equal(xb, bundle.train.x[torch.tensor([0, 5])].cpu())
    assert torch.equal(yb, bundle.train.y[torch.tensor([0, 5])].cpu())


def test_window_normalisation_subtracts_the_window_mean_and_adds_it_back(tmp_path):
    path = monthly_csv(tmp_path / "m.csv", n=60)
    plain = read_series(validate_config(series_cfg(path, lookback=6, horizon=3, normalize="series")).data, 0)
    window = read_series(validate_config(series_cfg(path, lookback=6, horizon=3)).data, 0)
    xs, xw = plain.test.x.cpu(), window.test.x.cpu()
    torch.testing.assert_close(xw, xs - xs.mean(1, keepdim=True), rtol=1e-5, atol=1e-5)
    task = parse_task("forecast").bind(window.target, window.classes)
    zero = torch.zeros(3, 3)  # a network answering 0 forecasts the window's mean, in the series' units
    p = task._parts(window.test.y)
    level = xs.mean(1)[:, 0] * p["std"][:, 0] + p["mean"][:, 0]
    torch.testing.assert_close(task.forecasts(zero, window.test.y)[:, :, 0], level[:, None].expand(3, 3))
    season = read_series(validate_config(series_cfg(path, lookback=6, horizon=3, normalize="season")).data, 0)
    torch.testing.assert_close(season.test.x.cpu(), xw)  # the same inputs; a network answering 0: last season
    torch.testing.assert_close(task.forecasts(zero, season.test.y), task._parts(season.test.y)["naive"])


def test_metrics_match_numpy():
    rng = np.random.default_rng(3)
    B, H, K = 7, 5, 2
    task = parse_task({"type": "forecast", "loss": "mse"}).bind({"horizon": H, "targets": ["a", "b"], "season": 4},
                                                                 ["o"] * (H * K))
    truth = rng.normal(50, 10, (B, H, K))
    truth[0, 0, 0] = 0.0  # a zero truth with a zero forecast: no sMAPE error
    base, mean, std = rng.normal(0, 1, (B, H, K)), rng.normal(40, 5, (B, K)), rng.uniform(1, 3, (B, K))
    scale, naive = rng.uniform(0.5, 2, (B, K)), rng.normal(50, 10, (B, H, K))
    y = np.concatenate([truth.reshape(B, -1), base.reshape(B, -1), mean, std, scale, naive.reshape(B, -1),
                        np.arange(B)[:, None]], 1)
    out = rng.normal(0, 1, (B, H * K))
    pred = (out.reshape(B, H, K) + base) * std[:, None] + mean[:, None]
    pred[0, 0, 0] = 0.0
    out[0, 0] = (0.0 - mean[0, 0]) / std[0, 0] - base[0, 0, 0]
    y_t, out_t = torch.tensor(y, dtype=torch.float32), torch.tensor(out, dtype=torch.float32)
    scores = task.scores(task.stats(out_t, y_t))
    err = pred - truth
    denom = np.abs(pred) + np.abs(truth)
    smape = np.where(denom > 0, 200 * np.abs(err) / np.where(denom > 0, denom, 1), 0).mean()
    mase = (np.abs(err) / scale[:, None]).mean(axis=(1, 2)).mean()
    z = (truth - mean[:, None]) / std[:, None] - base
    assert scores["mae"] == pytest.approx(np.abs(err).mean(), rel=1e-4)
    assert scores["rmse"] == pytest.approx(np.sqrt((err ** 2).mean()), rel=1e-4)
    assert scores["smape"] == pytest.approx(smape, rel=1e-4)
    assert scores["mase"] == pytest.approx(mase, rel=1e-4)
    assert scores["loss"] == pytest.approx(((out.reshape(B, H, K) - z) ** 2).mean(), rel=1e-4)
    report = task.report(out_t, y_t)
    assert report["mase"] == pytest.approx(mase, rel=1e-4) and report["smape"] == pytest.approx(smape, rel=1e-4)
    naive_mase = (np.abs(naive - truth) / scale[:, None]).mean(axis=(1, 2)).mean()
    assert report["seasonal_naive"]["mase"] == pytest.approx(naive_mase, rel=1e-4)
    assert report["seasonal_naive"]["mae"] == pytest.approx(np.abs(naive - truth).mean(), rel=1e-4)
    per = (np.abs(err) / scale[:, None]).mean(axis=(1, 2))
    assert task.step_stat(out_t, y_t).item() == pytest.approx(per.sum(), rel=1e-4)


def test_frequencies_are_inferred_and_step_on_the_calendar():
    months = [np.arange(np.datetime64("2020-01"), np.datetime64("2021-01")).astype("datetime64[D]").astype(
        "datetime64[s]")]
    freq = infer_frequency(months, False, None)
    assert (freq.name, freq.months, freq.season, freq.month_end) == ("monthly", 1, 12, False)
    assert freq.text(freq.after(months[0][-1], 3)) == ["2021-01-01", "2021-02-01", "2021-03-01"]
    ends = [np.array(["2019-11-30", "2019-12-31", "2020-01-31", "2020-02-29"], dtype="datetime64[s]")]
    freq = infer_frequency(ends, False, None)
    assert freq.month_end and freq.text(freq.after(ends[0][-1], 3)) == ["2020-03-31", "2020-04-30", "2020-05-31"]
    quarters = [np.array(["2019-01-01", "2019-04-01", "2019-07-01", "2019-10-01"], dtype="datetime64[s]")]
    freq = infer_frequency(quarters, False, None)
    assert (freq.name, freq.season) == ("quarterly", 4) and freq.text(freq.after(quarters[0][-1], 2)) == [
        "2020-01-01", "2020-04-01"]
    halves = [np.arange(np.datetime64("2024-03-01T00:00"), np.datetime64("2024-03-01T03:00"),
                        np.timedelta64(30, "m")).astype("datetime64[s]")]
    freq = infer_frequency(halves, False, None)
    assert (freq.name, freq.season) == ("half-hourly", 48)
    assert freq.text(freq.after(halves[0][-1], 2)) == ["2024-03-01T03:00:00", "2024-03-01T03:30:00"]
    assert infer_frequency([np.array([1.0, 2.0, 3.0])], True, 5).season == 5
    assert Frequency("daily", seconds=86400, season=7).steps(np.array(
        ["2024-01-01", "2024-01-02", "2024-01-05"], dtype="datetime64[s]")).tolist() == [1.0, 3.0]


def test_duplicates_and_missing_values_are_one_line_errors_gaps_a_note(tmp_path, cli, write_config):
    path = tmp_path / "d.csv"
    path.write_text("date,sales\n" + "".join(f"2020-01-{d:02d},{d}\n" for d in range(1, 29)) + "2020-01-28,5\n")
    result = cli("train", write_config(series_cfg(str(path), id_column=None, lookback=3, horizon=2)))
    assert result.exit_code == 2 and "d.csv: line 30: the series has 1 duplicate timestamp(s), the first " \
        "2020-01-28" in result.output and "Traceback" not in result.output
    path.write_text("date,sales\n" + "".join(f"2020-01-{d:02d},{'' if d == 9 else d}\n" for d in range(1, 29)))
    result = cli("train", write_config(series_cfg(str(path), id_column=None, lookback=3, horizon=2)))
    assert result.exit_code == 2 and "line 10, column 'sales'" in result.output
    path.write_text("date,sales\n" + "".join(f"2020-01-{d:02d},{d}\n" for d in range(1, 29) if d != 9))
    bundle = read_series(validate_config(series_cfg(str(path), id_column=None, lookback=3, horizon=2)).data, 0)
    assert any("1 missing time step(s) in 1 gap(s), the first after 2020-01-08" in n for n in bundle.notes)
    path.write_text("date,sales\nyesterday,1\n")
    result = cli("train", write_config(series_cfg(str(path), id_column=None, lookback=3, horizon=2)))
    assert result.exit_code == 2 and "line 2: 'yesterday' in the time column is not a date" in result.output


def test_train_evaluate_predict_beats_seasonal_naive_with_timestamps(cli, write_config, tmp_path):
    path = monthly_csv(tmp_path / "sales.csv", month_end=True)
    result = cli("train", write_config(series_cfg(path)), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "frequency monthly (season 12), 3 series" in result.output
    run = next((tmp_path / "runs").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert summary["task"] == "forecast" and summary["headline"] == "mase"

    out = cli("evaluate", run.name, "--runs-dir", tmp_path / "runs", "--json")
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["samples"] == 3 and report["horizon"] == 12 and report["season"] == 12
    assert report["mase"] < report["seasonal_naive"]["mase"]  # the trend defeats last year's values
    assert report["mase"] == pytest.approx(summary["test"]["mase"], rel=1e-4)
    assert (run / "forecast-test.png").is_file()
    shown = cli("evaluate", run.name, "--runs-dir", tmp_path / "runs")
    assert "seasonal naive" in shown.stdout and "windows beat the seasonal naive" in shown.stdout

    out = cli("predict", path, "--run", run.name, "--runs-dir", tmp_path / "runs", "--json")
    assert out.exit_code == 0, out.output
    answers = json.loads(out.stdout)
    assert [a["series"] for a in answers] == ["s0", "s1", "s2"]
    times = [step["time"] for step in answers[0]["forecast"]]
    assert times[:3] == ["2018-01-31", "2018-02-28", "2018-03-31"] and len(times) == 12  # after 2017-12-31
    t = np.arange(96, 108)
    expected = 100 + 0.5 * t + 20 * np.sin(2 * np.pi * t / 12)
    values = np.array([step["value"] for step in answers[0]["forecast"]])
    assert np.abs(values - expected).mean() < 6  # the noise is 2; seasonal naive is off by 6 (the trend)
    table = cli("predict", path, "--run", run.name, "--runs-dir", tmp_path / "runs")
    assert "2018-12-31" in table.stdout
    import dlcli

    assert dlcli.load(run).predict(path) == answers  # the Python API answers as the command line does
    # export and serve: tests/test_series_export.py


@pytest.mark.parametrize("horizon", [3, 12])
def test_the_example_configs_head_follows_the_horizon(tmp_path, horizon):
    """configs/series_forecast.yaml ends with `dense: outputs`: another horizon (a sweep over it) needs no edit of
    the layers, and the shipped horizon keeps the model it had (64 hidden, the shortcut 36 -> 12)."""
    from pathlib import Path

    import yaml

    from dlcli.models import build_model

    shipped = yaml.safe_load((Path(__file__).parent.parent / "configs" / "series_forecast.yaml").read_text())
    assert shipped["model"]["layers"][1]["residual"][-1] == {"dense": "outputs"}
    shipped["data"].update(train_file=monthly_csv(tmp_path / "m.csv"), horizon=horizon)
    cfg = validate_config(shipped)
    bundle = read_series(cfg.data, 0)
    model, rows = build_model(cfg.model, bundle.input_shape, len(bundle.classes))
    assert model(torch.randn(2, *bundle.input_shape)).shape == (2, horizon)
    block = [r for r in rows if r.depth == 0][-1]
    assert block.parameters == 36 * 64 + 64 + 64 * horizon + horizon + 36 * horizon + horizon


def test_covariates_are_input_channels_scaled_per_series(tmp_path):
    path = monthly_csv(tmp_path / "m.csv", n=60)
    bundle = read_series(validate_config(series_cfg(path, lookback=6, horizon=3, normalize="series",
                                                    covariates=["price"])).data, 0)
    assert bundle.input_shape == (6, 2) and bundle.classes == ["sales[t+1]", "sales[t+2]", "sales[t+3]"]
    price = 1 + 0.01 * np.arange(60)
    part = price[:54]
    np.testing.assert_allclose(bundle.test.x.cpu()[0, :, 1].numpy(), (price[51:57] - part.mean()) / part.std(),
                               rtol=1e-4, atol=1e-5)


def test_init_writes_a_series_config_and_data_check_reports_the_series(cli, tmp_path):
    import yaml

    path = monthly_csv(tmp_path / "shops.csv", n=60)
    result = cli("init", path, "-o", tmp_path / "shops.yaml")
    assert result.exit_code == 0, result.output
    cfg = yaml.safe_load((tmp_path / "shops.yaml").read_text())
    assert cfg["task"] == {"type": "forecast", "quantiles": [0.1, 0.5, 0.9], "intervals": "conformal"}
    assert cfg["data"]["dataset"] == "series"
    # the label as init guesses a table's: the last column (--label sales names another)
    assert (cfg["data"]["time_column"], cfg["data"]["label_column"], cfg["data"]["id_column"]) == ("date", "price",
                                                                                                    "store")
    assert cfg["data"]["horizon"] == 12 and cfg["data"]["lookback"] == 24  # one season; 60 steps fit 24 + 3 x 12
    validate_config(cfg)

    days = [f"2024-01-{d:02d}" for d in range(1, 29) if d != 9]  # a gap on the 9th
    lines = ["date,shop,units"] + [f"{d},a,{i % 7 + i}" for i, d in enumerate(days)]
    lines += ["2024-01-05,b,1", "2024-01-05,b,2", "2024-01-06,b,3"]  # a duplicate; b is short
    lines += [f"2024-01-{d:02d},c,4" for d in range(1, 29)]  # constant
    (tmp_path / "daily.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "daily.yaml").write_text(yaml.safe_dump({
        "data": {"dataset": "series", "train_file": str(tmp_path / "daily.csv"), "label_column": "units",
                 "id_column": "shop", "lookback": 7, "horizon": 3}, "model": {"type": "mlp"}}))
    result = cli("data", "check", tmp_path / "daily.yaml", "--json")
    report = json.loads(result.stdout)
    found = {f["check"]: f for f in report["findings"]}
    assert result.exit_code == 1 and not report["ok"]
    assert found["duplicate-time"]["severity"] == "error" and "series 'b'" in found["duplicate-time"]["message"]
    assert "series 'a': 1 missing time step(s)" in found["gaps"]["message"]
    assert "series 'b' has 3 steps, fewer than lookback + horizon = 10" in found["short-series"]["message"]
    assert "series 'c': target 'units' never changes" in found["constant-series"]["message"]
    assert report["series"]["frequency"] == "daily" and report["series"]["season"] == 7
    assert report["series"]["windows"]["test"] == 2  # a and c
