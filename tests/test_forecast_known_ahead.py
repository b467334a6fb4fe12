"""Inputs known ahead: data.known_ahead (user columns given for the horizon too) and data.calendar (features of the
dates): windows that read them over the horizon and nothing else past the origin, predict's history file with the
horizon's rows, export equal to predict, data check naming past-only and known-ahead inputs."""

import json

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from dlcli.cli import app
from dlcli.config import validate_config
from dlcli.data.series import calendar_features, read_series

L, H = 12, 4


def ok(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def promo_csv(path, n=120, seed=0):
    """Two stores whose sales jump by 40 in the months of a promotion planned ahead (random), over a level."""
    rng = np.random.default_rng(seed)
    months = np.arange(np.datetime64("2010-01", "M"), np.datetime64("2010-01", "M") + n)
    lines = ["date,store,sales,promo"]
    for s, level in enumerate((100, 60)):
        promo = (rng.random(n) < 0.3).astype(int)
        y = level + 40 * promo + rng.normal(0, 1.0, n)
        lines += [f"{m}-01,s{s},{v:.3f},{p}" for m, v, p in zip(months, y, promo)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def cfg_for(path, **data):
    return {"name": "known", "seed": 0,
            "data": {"dataset": "series", "train_file": path, "time_column": "date", "label_column": "sales",
                     "id_column": "store", "lookback": L, "horizon": H, "known_ahead": ["promo"],
                     "calendar": ["month"], **data},
            "model": {"type": "mlp", "hidden": [32]}, "optimizer": {"name": "adam", "lr": 0.003},
            "train": {"epochs": 40, "batch_size": 32, "device": "cpu"}}


def test_calendar_features_are_sines_and_cosines_of_the_cycle():
    t = np.array(["2024-01-01T00:00", "2024-07-01T12:00", "2024-03-31T06:00"], dtype="datetime64[s]")
    f = calendar_features(t, ["month", "day_of_week", "day_of_month", "hour"])
    place = np.array([[0 / 12, 0 / 7, 0 / 31, 0 / 24],  # a Monday in January, the 1st, midnight
                      [6 / 12, 0 / 7, 0 / 31, 12 / 24],  # a Monday in July
                      [2 / 12, 6 / 7, 30 / 31, 6 / 24]])  # a Sunday, March 31st
    want = np.stack([np.sin(2 * np.pi * place), np.cos(2 * np.pi * place)], -1).reshape(3, 8)
    np.testing.assert_allclose(f, want, atol=1e-12)


def test_windows_read_known_inputs_over_the_horizon_and_nothing_else_past_the_origin(tmp_path):
    path = promo_csv(tmp_path / "p.csv", n=40)
    bundle = read_series(validate_config(cfg_for(path, normalize="series")).data, 0)
    assert bundle.input_shape == (L + H, 4)  # sales, promo, month_sin, month_cos over lookback + horizon
    x = bundle.test.x.cpu()
    store = bundle.test.store
    origin = bundle.test.origin
    scaled = store.scaled[origin[:, None] + torch.arange(-L, H)]
    torch.testing.assert_close(x[:, :L], scaled[:, :L])  # the history: every channel
    assert (x[:, L:, 0] == 0).all()  # the horizon's sales are never read
    torch.testing.assert_close(x[:, L:, 1:], scaled[:, L:, 1:])  # promo and the calendar: read ahead


@pytest.fixture(scope="module")
def known_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("known-ahead")
    path = promo_csv(root / "sales.csv")
    (root / "fc.yaml").write_text(yaml.safe_dump(cfg_for(path)))
    ok("train", root / "fc.yaml", "--runs-dir", root / "runs")
    return next((root / "runs").iterdir()), path


def test_known_promotions_are_forecast(known_run):
    run, _ = known_run
    report = json.loads(ok("evaluate", run.name, "--runs-dir", run.parent, "--json").stdout)
    # sales jump by 40 in promotion months: known ahead, they are forecast; last year's values cannot know them
    assert report["mae"] < 8 < report["seasonal_naive"]["mae"]


def test_predict_needs_the_horizons_rows_and_export_agrees(known_run, tmp_path):
    run, path = known_run
    lines = open(path).read().splitlines()
    result = CliRunner().invoke(app, ["predict", path, "--run", run.name, "--runs-dir", str(run.parent)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "series 's0' needs the 4 rows after its last value (2020-01-01 to 2020-04-01) with promo, month known " \
           "ahead and sales empty; 0 given" in result.output
    plan = {"s0": [1, 0, 0, 1], "s1": [0, 1, 0, 0]}
    future = [f"2020-{m:02d}-01,{s},,{p[m - 1]}" for s, p in plan.items() for m in range(1, 5)]
    history = tmp_path / "history.csv"
    history.write_text("\n".join(lines + future) + "\n")
    answers = json.loads(ok("predict", history, "--run", run.name, "--runs-dir", run.parent, "--json").stdout)
    for a in answers:
        assert [s["time"] for s in a["forecast"]] == ["2020-01-01", "2020-02-01", "2020-03-01", "2020-04-01"]
        values = np.array([s["value"] for s in a["forecast"]])
        promo = np.array(plan[a["series"]]) == 1
        assert values[promo].min() > values[~promo].max() + 20  # the plan moves the forecast
    gap = tmp_path / "gap.csv"
    gap.write_text("\n".join(lines + future[:-1] + ["2020-04-01,s1,,"]) + "\n")
    result = CliRunner().invoke(app, ["predict", str(gap), "--run", run.name, "--runs-dir", str(run.parent)])
    assert result.exit_code == 2 and "column 'promo': series 's1' needs 'promo' known ahead" in result.output

    ort = pytest.importorskip("onnxruntime")
    model = ok("export", run.name, "--runs-dir", run.parent).stdout.strip().splitlines()[-1]
    side = json.loads(open(model.replace(".onnx", ".series.json")).read())
    assert side["known_ahead"] == ["promo", "month_sin", "month_cos"] and side["input_steps"] == L + H
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    rows = {}
    for line in lines[1:]:
        date, sid, sales, promo = line.split(",")
        rows.setdefault(sid, []).append((date, float(sales), float(promo)))
    for a in answers:
        past = rows[a["series"]][-L:]
        dates = np.array([d for d, _, _ in past] + [f"2020-{m:02d}-01" for m in range(1, 5)], "datetime64[s]")
        month = calendar_features(dates, ["month"])
        window = np.column_stack([[v for _, v, _ in past] + [np.nan] * H,  # the horizon's sales: not read
                                  [p for _, _, p in past] + plan[a["series"]], month]).astype(np.float32)
        s = side["series"][a["series"]]
        got = session.run(None, {"input": window[None], "series_mean": np.float32([s["mean"]]),
                                 "series_std": np.float32([s["std"]])})[0]
        np.testing.assert_allclose(got[0, :, 0], [st["value"] for st in a["forecast"]], rtol=1e-5)


def test_data_check_names_past_only_and_known_ahead_inputs(known_run, tmp_path):
    run, path = known_run
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg_for(path)))
    report = json.loads(ok("data", "check", tmp_path / "c.yaml", "--json").stdout)
    shown = ok("data", "check", tmp_path / "c.yaml").stdout
    assert "inputs: past only sales; known ahead promo, month_sin, month_cos" in shown
    assert report["series"]["inputs"] == {"past_only": ["sales"],
                                                      "known_ahead": ["promo", "month_sin", "month_cos"]}


def test_serve_refuses_a_known_ahead_run_in_one_line(known_run):
    pytest.importorskip("fastapi")
    from tests.test_serve import http, serving

    run, _ = known_run
    with serving(run) as (url, _):
        status, err = http(url + "predict", json.dumps([[1.0, 0.0]] * 20).encode())
    assert status == 422 and "this run reads inputs known ahead (promo, month): forecast it with dlcli predict" \
        in err["error"]
