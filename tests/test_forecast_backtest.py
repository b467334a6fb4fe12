"""data.val_windows (several rolling validation windows) and `dlcli evaluate RUN --backtest K [--refit]`
(rolling-origin backtesting): windows against hand-computed indices, scores against numpy from the file itself."""

import json

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from dlcli.cli import app
from dlcli.data.series import cut_windows
from tests.test_series import monthly_csv, series_cfg

H, L = 3, 12


def ok(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_rolling_validation_windows_match_hand_computed_origins():
    # series of 30 and 20 steps, lookback 3, horizon 4, two horizons held out (steps 18-25 and 8-15), 5 windows
    w = cut_windows([30, 20], lookback=3, horizon=4, val_windows=2, rolling=5)
    assert w.val[0].tolist() == [22, 21, 20, 19, 18, 42, 41, 40, 39, 38]  # 30 + (12 .. 8): the second series
    assert w.test[0].tolist() == [26, 46]
    assert w.train[0].tolist() == list(range(3, 15)) + [33, 34]  # targets end before the held-out steps, as before
    for origin, s in zip(*w.val):
        start, n = (0, 30) if s == 0 else (30, 20)
        assert start + n - 4 - 8 <= origin and origin + 4 <= start + n - 4  # inside the held-out horizons
    same = cut_windows([30, 20], lookback=3, horizon=4, val_windows=3, rolling=3)
    plain = cut_windows([30, 20], lookback=3, horizon=4, val_windows=3)
    assert same.val[0].tolist() == plain.val[0].tolist() == [22, 18, 14, 42, 38, 34]  # one a horizon: as before


def test_too_many_rolling_windows_is_a_one_line_error(tmp_path, cli, write_config):
    cfg = series_cfg(monthly_csv(tmp_path / "m.csv", n=48), lookback=L, horizon=H, val_windows=5)
    result = cli("validate", write_config(cfg))
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "data.val_windows: 5 windows need 5 distinct origins, and val_split: 1 horizon(s) of 3 steps give 1: " \
           "set data.val_split to 3 or more" in result.output
    cfg["data"]["val_split"] = 3
    assert cli("validate", write_config(cfg)).exit_code == 0


def test_rolling_validation_scores_every_window(tmp_path):
    import dlcli

    path = monthly_csv(tmp_path / "m.csv", series=((100, 20), (50, 5)), n=60)
    cfg = series_cfg(path, lookback=L, horizon=H, val_split=2, val_windows=4)
    cfg["train"]["epochs"] = 2
    run = dlcli.train(cfg, runs_dir=tmp_path / "runs", quiet=True)
    report = run.evaluate(split="val")
    assert report["samples"] == 8  # 4 windows x 2 series
    assert [r["series"] for r in report["per_window"]] == ["s0"] * 4 + ["s1"] * 4


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("backtest")
    path = monthly_csv(root / "sales.csv", series=((100, 20), (50, 5)), n=60)
    cfg = series_cfg(path, lookback=L, horizon=H)
    cfg["train"]["epochs"] = 3
    (root / "fc.yaml").write_text(yaml.safe_dump(cfg))
    ok("train", root / "fc.yaml", "--runs-dir", root / "runs")
    return next((root / "runs").iterdir()), path


def series_values(path):
    found = {}
    for line in open(path).read().splitlines()[1:]:
        _, sid, sales, _ = line.split(",")
        found.setdefault(sid, []).append(float(sales))
    return {k: np.array(v) for k, v in found.items()}


def test_backtest_without_refit_scores_each_window_as_numpy_does(small_run, tmp_path):
    run, path = small_run
    report = json.loads(ok("evaluate", run.name, "--runs-dir", run.parent, "--backtest", 3, "--json").stdout)
    assert report["windows"] == 3 and report["refit"] is False and report["models_trained"] == 1
    assert (run / "backtest.png").is_file() and (run / "backtest.json").is_file()
    values = series_values(path)
    # the one model trained on each series less its last 2 horizons: its own forecasts, through predict
    trained = next((run / "backtest" / "runs").iterdir())
    assert len(json.loads((trained / "data.json").read_text())["preprocessing"]["series"]) == 2
    for w in report["per_window"]:
        back = (3 - w["window"]) * H
        history = tmp_path / f"h{w['window']}.csv"
        lines = open(path).read().splitlines()
        keep = {sid: len(v) - back - H for sid, v in values.items()}
        seen, rows = {}, [lines[0]]
        for line in lines[1:]:
            sid = line.split(",")[1]
            seen[sid] = seen.get(sid, 0) + 1
            if seen[sid] <= keep[sid]:
                rows.append(line)
        history.write_text("\n".join(rows) + "\n")
        answers = json.loads(ok("predict", history, "--run", trained.name, "--runs-dir", trained.parent,
                                "--json").stdout)
        errors, naive_errors = [], []
        for a in answers:
            v = values[a["series"]]
            truth = v[keep[a["series"]]:keep[a["series"]] + H]
            errors.append(np.array([s["value"] for s in a["forecast"]]) - truth)
            naive_errors.append(v[keep[a["series"]] - 12:keep[a["series"]] - 12 + H] - truth)  # a season back
        assert w["model"]["mae"] == pytest.approx(np.abs(errors).mean(), rel=1e-4)
        assert w["model"]["rmse"] == pytest.approx(np.sqrt((np.array(errors) ** 2).mean()), rel=1e-4)
        assert w["seasonal_naive"]["mae"] == pytest.approx(np.abs(naive_errors).mean(), rel=1e-4)
    for m in ("mae", "mase"):
        assert report["mean"]["model"][m] == pytest.approx(np.mean([w["model"][m] for w in report["per_window"]]))
    shown = ok("evaluate", run.name, "--runs-dir", run.parent, "--backtest", 3).stdout
    assert "one model trained before the first window, not refit" in shown and "mean" in shown


def test_backtest_with_refit_ends_on_the_run_itself(small_run):
    run, _ = small_run
    test = json.loads(ok("evaluate", run.name, "--runs-dir", run.parent, "--json").stdout)
    report = json.loads(ok("evaluate", run.name, "--runs-dir", run.parent, "--backtest", 2, "--refit",
                           "--json").stdout)
    assert report["refit"] is True and report["models_trained"] == 1  # window 2 is forecast by the run itself
    last = report["per_window"][-1]
    assert last["model"]["mase"] == pytest.approx(test["mase"], rel=1e-5)
    assert last["seasonal_naive"]["mase"] == pytest.approx(test["seasonal_naive"]["mase"], rel=1e-5)
    result = CliRunner().invoke(app, ["evaluate", run.name, "--runs-dir", str(run.parent), "--backtest", "30"])
    assert result.exit_code == 2 and "--backtest 30: the earliest origin lies 30 horizons" in result.output
    result = CliRunner().invoke(app, ["evaluate", run.name, "--runs-dir", str(run.parent), "--refit"])
    assert result.exit_code == 2 and "--refit goes with --backtest K" in result.output
