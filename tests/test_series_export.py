"""A forecast run exported (a window and its series' scaling in, the horizon out) and served (a JSON series in, the
forecast out): both answer what `dlcli predict HISTORY.csv` answers for the same history."""

import functools
import json
import shutil

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from dlcli.cli import app
from tests.test_series import monthly_csv, series_cfg

LOOKBACK, HORIZON = 12, 3


def ok(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def forecast_run(tmp_path_factory):
    """A tiny run: two monthly series with a price covariate, `normalize: season` (the window's level taken off
    inside, last season's values as the base), and a history file with a series the run has not seen."""
    return trained_forecaster(tmp_path_factory.mktemp("forecast-export"), "season")


@pytest.fixture(scope="module")
def window_run(tmp_path_factory):
    """The same with `normalize: window`: the window's mean taken off its inputs and added back as the base."""
    return trained_forecaster(tmp_path_factory.mktemp("forecast-export-window"), "window")


def trained_forecaster(root, normalize):
    path = monthly_csv(root / "sales.csv", series=((100, 20), (50, 5)), n=48)
    cfg = series_cfg(path, lookback=LOOKBACK, horizon=HORIZON, normalize=normalize, covariates=["price"])
    cfg["train"]["epochs"] = 3
    cfg["model"]["hidden"] = [16]
    (root / "fc.yaml").write_text(yaml.safe_dump(cfg))
    ok("train", root / "fc.yaml", "--runs-dir", root / "runs")
    new = root / "new.csv"  # s1's history renamed, 7 months shorter: scaled on its own history, not the stored one
    lines = open(path).read().splitlines()
    new.write_text("\n".join([lines[0]] + [ln.replace(",s1,", ",fresh,") for ln in lines[1:] if ",s1," in ln][:-7])
                   + "\n")
    return next((root / "runs").iterdir()), path, str(new)


@functools.lru_cache
def predicted(run, path):
    out = ok("predict", path, "--run", run.name, "--runs-dir", run.parent, "--json")
    return {a["series"]: a["forecast"] for a in json.loads(out.stdout)}


def history(path):
    """{series: (dates, [[sales, price], ...])} as written."""
    found = {}
    for line in open(path).read().splitlines()[1:]:
        date, sid, sales, price = line.split(",")
        found.setdefault(sid, ([], []))
        found[sid][0].append(date)
        found[sid][1].append([float(sales), float(price)])
    return found


@pytest.mark.parametrize("normalize", ["season", "window"])
def test_onnx_forecast_equals_predict_for_known_and_new_series(normalize, request):
    ort = pytest.importorskip("onnxruntime")
    run, path, new = request.getfixturevalue({"season": "forecast_run", "window": "window_run"}[normalize])
    assert yaml.safe_load((run / "config.yaml").read_text())["data"]["normalize"] == normalize
    out = ok("export", run.name, "--runs-dir", run.parent)
    model = out.stdout.strip().splitlines()[-1]
    assert "'series_mean' N x 2 + 'series_std' N x 2, output 'forecast' N x 3 x 1" in out.output
    side = json.loads(open(model.replace(".onnx", ".series.json")).read())
    from dlcli.export import read_metadata

    meta = read_metadata(model)
    assert (meta["lookback"], meta["horizon"], meta["targets"], meta["frequency"]) == (LOOKBACK, HORIZON, ["sales"],
                                                                                       "monthly")
    assert meta["normalize"] == side["normalize"] == normalize
    assert meta["input_channels"] == ["sales", "price"] and meta["output_shape"] == [-1, HORIZON, 1]
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])

    def forecast(steps, mean, std):
        window = np.array(steps[-LOOKBACK:], dtype=np.float32)[None]
        feeds = {"input": window, "series_mean": np.array([mean], np.float32),
                 "series_std": np.array([std], np.float32)}
        return session.run(None, feeds)[0][0, :, 0]

    known = predicted(run, path)
    for sid, (_, steps) in history(path).items():  # the scaling each series trained with, from the sidecar
        got = forecast(steps, side["series"][sid]["mean"], side["series"][sid]["std"])
        np.testing.assert_allclose(got, [s["value"] for s in known[sid]], rtol=1e-5)
    _, steps = history(new)["fresh"]  # a new series: its whole history's mean and std, as the sidecar says
    values = np.array(steps)
    got = forecast(steps, values.mean(0), np.where(values.std(0) > 0, values.std(0), 1.0))
    np.testing.assert_allclose(got, [s["value"] for s in predicted(run, new)["fresh"]], rtol=1e-5)
    assert not np.allclose(got, forecast(steps, side["series"]["s1"]["mean"], side["series"]["s1"]["std"]),
                           rtol=1e-3)  # the scaling inputs matter: s1's stored ones give another forecast


def test_season_base_outside_the_window_is_refused_in_one_line(tmp_path):
    from dlcli.config import validate_config
    from dlcli.data.series import window_model
    from dlcli.errors import DataError

    path = monthly_csv(tmp_path / "m.csv", n=40)
    entry = validate_config(series_cfg(path, lookback=6, horizon=3, normalize="season")).data
    with pytest.raises(DataError, match=r"lookback = 6 steps does not hold: .*retrain with lookback >= 12"):
        window_model(None, None, entry, 12)


def test_served_forecast_equals_predict(forecast_run):
    pytest.importorskip("fastapi")
    from tests.test_serve import http, serving

    run, path, new = forecast_run
    known, fresh = predicted(run, path), predicted(run, new)["fresh"]
    series = history(path)
    dates, steps = series["s0"]
    body = {"id": "s0", "series": [{"time": d, "value": v} for d, v in zip(dates, steps)][::-1]}  # any order
    with serving(run) as (url, line):
        assert "(series, " in line
        status, info = http(url + "info")
        assert status == 200 and info["input"]["lookback"] == LOOKBACK and info["input"]["channels"] == ["sales",
                                                                                                            "price"]
        status, answer = http(url + "predict", json.dumps(body).encode())
        assert status == 200, answer
        assert answer[0]["series"] == "s0" and [s["time"] for s in answer[0]["forecast"]] == [
            s["time"] for s in known["s0"]]  # 2014-01-01 ...: the months after the last one sent
        np.testing.assert_allclose([s["value"] for s in answer[0]["forecast"]], [s["value"] for s in known["s0"]],
                                   rtol=1e-5)
        # no times, no id: rows of [sales, price], scaled on the history sent; several series in one request
        rows = history(new)["fresh"][1]
        status, answer = http(url + "predict", json.dumps([{"series": rows}, {"id": "s1", "series": series["s1"][1]}
                                                           ]).encode())
        assert status == 200, answer
        assert answer[0]["series"] == "series[0]" and [s["step"] for s in answer[0]["forecast"]] == [1, 2, 3]
        np.testing.assert_allclose([s["value"] for s in answer[0]["forecast"]], [s["value"] for s in fresh],
                                   rtol=1e-5)
        np.testing.assert_allclose([s["value"] for s in answer[1]["forecast"]], [s["value"] for s in known["s1"]],
                                   rtol=1e-5)
        status, err = http(url + "predict", json.dumps([1.0, 2.0] * 10).encode())  # one channel; the run reads 2
        assert status == 422 and "series[0]: 1 value(s), but the run reads 2 channel(s)" in err["error"]
        status, err = http(url + "predict", json.dumps([[1e39, 1.0]] + rows).encode())
        assert status == 422 and "beyond float32's range" in err["error"]
        status, err = http(url + "predict", json.dumps(rows[:5]).encode())
        assert status == 422 and "fewer than lookback = 12 steps" in err["error"]
        dup = [{"time": "2020-01-01", "value": r} for r in rows[:LOOKBACK]]
        status, err = http(url + "predict", json.dumps({"series": dup}).encode())
        assert status == 422 and "duplicate timestamp" in err["error"]
        status, err = http(url + "predict", json.dumps([{"series": rows}] * 65).encode())
        assert status == 413 and "65 series in one request, over this server's limit of 64" in err["error"]


@pytest.mark.must_run_in_ci
@pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium binary: apt-get install chromium")
def test_the_page_forecasts_pasted_numbers(forecast_run):
    pytest.importorskip("fastapi")
    playwright = pytest.importorskip("playwright.sync_api")
    from tests.test_serve import serving

    run, path, new = forecast_run
    rows, fresh = history(new)["fresh"][1], predicted(run, new)["fresh"]
    with serving(run) as (url, _), playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True)
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector("body[data-ready=true]", timeout=10_000)
        page.fill("#series", "\n".join(f"{sales}, {price}" for sales, price in rows))  # pasted, one step a line
        page.click("#send-series")
        page.wait_for_selector(".result .number", timeout=10_000)
        steps = page.locator(".result .label").all_inner_texts()
        shown = page.locator(".result .number").all_inner_texts()
        browser.close()
    assert steps == ["t+1", "t+2", "t+3"]
    np.testing.assert_allclose([float(v) for v in shown], [s["value"] for s in fresh], rtol=1e-5)  # 6 digits
