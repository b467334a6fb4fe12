"""task: forecast with `quantiles` (pinball loss, intervals in evaluate, predict, export, serve and the API) and
`blend: seasonal_naive` (the network's weight against the seasonal naive forecast, chosen on validation windows).
Every figure is checked against numpy computed here from the same numbers."""

import json

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from dlcli.cli import app
from dlcli.tasks import parse_task
from tests.test_series import monthly_csv, series_cfg

LEVELS = [0.1, 0.5, 0.9]


def ok(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def random_rows(rng, B, H, K):
    """Target rows (dlcli.tasks.forecast.Pack) and their parts."""
    truth = rng.normal(50, 10, (B, H, K))
    base, mean, std = rng.normal(0, 1, (B, H, K)), rng.normal(40, 5, (B, K)), rng.uniform(1, 3, (B, K))
    scale, naive = rng.uniform(0.5, 2, (B, K)), rng.normal(50, 10, (B, H, K))
    y = np.concatenate([truth.reshape(B, -1), base.reshape(B, -1), mean, std, scale, naive.reshape(B, -1),
                        np.arange(B)[:, None]], 1)
    return torch.tensor(y, dtype=torch.float32), dict(truth=truth, base=base, mean=mean, std=std, scale=scale,
                                                      naive=naive)


def test_pinball_loss_quantiles_coverage_and_msis_match_numpy():
    rng = np.random.default_rng(5)
    B, H, K = 40, 4, 1
    levels = [0.05, 0.1, 0.5, 0.9]  # uneven, so that a loss with q and 1 - q swapped differs
    Q = len(levels)
    task = parse_task({"type": "forecast", "quantiles": [0.9, 0.05, 0.1]}).bind(  # 0.5 is added, the levels sorted
        {"horizon": H, "targets": ["a"], "season": 4}, ["o"] * (H * K * Q))
    assert task.levels() == levels
    y, p = random_rows(rng, B, H, K)
    z = (p["truth"] - p["mean"][:, None]) / p["std"][:, None] - p["base"]
    grid = z[..., None] - 0.5 + rng.normal(0, 1.5, (B, H, K, Q))  # outputs around the truth, crossing at times
    out_t = torch.tensor(grid.reshape(B, -1), dtype=torch.float32)
    q = np.array(levels)
    diff = z[..., None] - grid
    pinball = np.maximum(q * diff, (q - 1) * diff)  # the loss: twice this on the scaled values (at 0.5: mae)
    assert task.criterion(out_t, y).item() == pytest.approx(2 * pinball.mean(), rel=1e-5)
    units = np.sort((grid + p["base"][..., None]) * p["std"][:, None, :, None] + p["mean"][:, None, :, None], -1)
    assert (np.diff(grid, axis=-1) < 0).any()  # some raw outputs cross; sorted, none do
    np.testing.assert_allclose(task.quantile_forecasts(out_t, y).numpy(), units, rtol=1e-5)
    np.testing.assert_allclose(task.forecasts(out_t, y).numpy(), units[..., 2], rtol=1e-5)  # the point: the median

    report = task.report(out_t, y)
    truth = p["truth"]
    for j, level in enumerate(levels):
        assert report["coverage"][f"{level:g}"] == pytest.approx((truth <= units[..., j]).mean())
    assert 0 < report["coverage"]["0.1"] < report["coverage"]["0.9"] < 1
    lo, hi = units[..., 1], units[..., 3]  # 0.1 and 0.9: the one central interval (0.05 has no 0.95)
    assert list(report["intervals"]) == ["0.8"] and report["msis_interval"] == "0.8"
    assert report["intervals"]["0.8"]["coverage"] == pytest.approx(((truth >= lo) & (truth <= hi)).mean())
    scaled = np.maximum(q * (truth[..., None] - units), (q - 1) * (truth[..., None] - units)) / p["scale"][:, None,
                                                                                                          :, None]
    assert report["scaled_pinball"] == pytest.approx(scaled.mean(), rel=1e-5)
    alpha = 0.2
    score = (hi - lo) + 2 / alpha * (np.maximum(lo - truth, 0) + np.maximum(truth - hi, 0))
    assert report["msis"] == pytest.approx((score / p["scale"][:, None]).mean(axis=(1, 2)).mean(), rel=1e-5)
    assert report["mae"] == pytest.approx(np.abs(units[..., 2] - truth).mean(), rel=1e-5)


def test_calibrated_spread_is_the_validation_pinball_optimum_of_a_numpy_grid():
    rng = np.random.default_rng(8)
    B, H, K = 50, 4, 1
    levels = [0.1, 0.5, 0.9]
    task = parse_task({"type": "forecast", "quantiles": levels}).bind({"horizon": H, "targets": ["a"]}, ["o"] * H * 3)
    y, p = random_rows(rng, B, H, K)
    z = (p["truth"] - p["mean"][:, None]) / p["std"][:, None] - p["base"]
    # a median near the truth and quantiles far too narrow (+-0.1): calibration widens them
    grid = z[..., None] + rng.normal(0, 1, (B, H, K, 1)) + np.array([-0.1, 0.0, 0.1])
    out_t = torch.tensor(grid.reshape(B, -1), dtype=torch.float32)
    units = np.sort((grid + p["base"][..., None]) * p["std"][:, None, :, None] + p["mean"][:, None, :, None], -1)
    q = np.array(levels)
    loss = {}
    for c in np.round(np.arange(0.5, 3.01, 0.1), 1):
        spread = units[..., 1:2] + c * (units - units[..., 1:2])
        d = p["truth"][..., None] - spread
        loss[c] = (np.maximum(q * d, (q - 1) * d) / p["scale"][:, None, :, None]).mean()
    want = min(loss, key=lambda c: (loss[c], abs(c - 1)))
    tuned = task.tune(out_t, y)
    assert tuned["interval_scale"] == pytest.approx(want) and want > 1.5
    task.bind({"horizon": H, "targets": ["a"], **tuned}, ["o"] * H * 3)
    np.testing.assert_allclose(task.quantile_forecasts(out_t, y).numpy(),
                               units[..., 1:2] + want * (units - units[..., 1:2]), rtol=1e-5)
    assert "naive_weight" not in tuned  # no blend asked for
    assert parse_task({"type": "forecast", "quantiles": levels, "calibrate": False}).bind(
        {"horizon": H, "targets": ["a"]}, ["o"] * H * 3).tune(out_t, y) is None


@pytest.mark.parametrize("task, message", [
    ({"type": "forecast", "quantiles": [0, 0.5]}, "task.quantiles: 0 is not a quantile level"),
    ({"type": "forecast", "quantiles": [0.2, 0.2]}, "task.quantiles: 0.2 is listed twice"),
    ({"type": "forecast", "quantiles": []}, "task.quantiles: list at least one quantile level"),
    ({"type": "forecast", "loss": "mse", "quantiles": [0.1, 0.9]}, "quantiles train on the pinball loss, not loss"),
    ({"type": "forecast", "blend": "naive"}, "task.blend: Input should be 'none' or 'seasonal_naive'"),
])
def test_bad_quantiles_and_blend_are_one_line_errors(tmp_path, cli, write_config, task, message):
    cfg = series_cfg(monthly_csv(tmp_path / "m.csv", n=48), lookback=12, horizon=3)
    cfg["task"] = task
    result = cli("validate", write_config(cfg))
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1


def test_blend_weight_is_the_validation_optimum_of_a_numpy_grid():
    rng = np.random.default_rng(11)
    B, H, K = 30, 6, 1
    task = parse_task({"type": "forecast", "blend": "seasonal_naive"}).bind(
        {"horizon": H, "targets": ["a"], "season": 3}, ["o"] * (H * K))
    y, p = random_rows(rng, B, H, K)
    truth, naive = p["truth"], p["naive"]
    # a network half-way between truth and a forecast of its own: the best blend is neither end of the grid
    target = truth + 0.6 * (truth - naive) + rng.normal(0, 2, truth.shape)
    out = ((target - p["mean"][:, None]) / p["std"][:, None] - p["base"]).reshape(B, -1)
    out_t = torch.tensor(out, dtype=torch.float32)
    model = task.forecasts(out_t, y).double().numpy()
    mase = {w: (np.abs(w * model + (1 - w) * naive - truth) / p["scale"][:, None]).mean(axis=(1, 2)).mean()
            for w in np.round(np.linspace(0, 1, 11), 2)}
    want = min(mase, key=lambda w: (mase[w], -w))
    tuned = task.tune(out_t, y)
    assert tuned["naive_weight"] == pytest.approx(want) and 0 < want < 1
    task.bind({"horizon": H, "targets": ["a"], "season": 3, **tuned}, ["o"] * (H * K))
    np.testing.assert_allclose(task.forecasts(out_t, y).numpy(), want * model + (1 - want) * naive, rtol=1e-5)
    assert task.report(out_t, y)["mase"] == pytest.approx(mase[want], rel=1e-4)
    # a network that is the truth keeps all of its weight; one that is noise gives it all to seasonal naive
    exact = ((truth - p["mean"][:, None]) / p["std"][:, None] - p["base"]).reshape(B, -1)
    assert parse_task({"type": "forecast", "blend": "seasonal_naive"}).bind(
        {"horizon": H, "targets": ["a"]}, ["o"] * H).tune(torch.tensor(exact), y)["naive_weight"] == 1.0
    naive_out = ((naive - p["mean"][:, None]) / p["std"][:, None] - p["base"]).reshape(B, -1) + rng.normal(0, 9, (B, H))
    assert parse_task({"type": "forecast", "blend": "seasonal_naive"}).bind(
        {"horizon": H, "targets": ["a"]}, ["o"] * H).tune(torch.tensor(naive_out), y)["naive_weight"] <= 0.1


@pytest.fixture(scope="module", params=["head", "conformal"])
def quantile_run(tmp_path_factory, request):
    """A tiny run with quantiles (from the head, or conformal) and the blend, and a history file with a series the
    run has not seen."""
    root = tmp_path_factory.mktemp("forecast-quantiles")
    path = monthly_csv(root / "sales.csv", series=((100, 20), (50, 5)), n=60)
    cfg = series_cfg(path, lookback=12, horizon=3)
    cfg["task"] = {"type": "forecast", "quantiles": [0.1, 0.9], "blend": "seasonal_naive",
                   "intervals": request.param}
    cfg["train"]["epochs"] = 4
    (root / "fc.yaml").write_text(yaml.safe_dump(cfg))
    ok("train", root / "fc.yaml", "--runs-dir", root / "runs")
    run = next((root / "runs").iterdir())
    info = json.loads((run / "data.json").read_text())
    assert 0 <= info["task"]["naive_weight"] <= 1
    assert ("conformal_offsets" in info["task"]) == (request.param == "conformal")
    info["task"]["naive_weight"] = 0.3  # whatever validation chose, a weight that moves every forecast
    (run / "data.json").write_text(json.dumps(info))
    new = root / "new.csv"
    lines = open(path).read().splitlines()
    new.write_text("\n".join([lines[0]] + [ln.replace(",s1,", ",fresh,") for ln in lines[1:] if ",s1," in ln][:-5])
                   + "\n")
    return run, path, str(new)


def test_quantile_run_evaluates_predicts_exports_and_serves_the_same_intervals(quantile_run):
    run, path, new = quantile_run
    report = json.loads(ok("evaluate", run.name, "--runs-dir", run.parent, "--json").stdout)
    assert report["quantiles"] == LEVELS and set(report["coverage"]) == {"0.1", "0.5", "0.9"}
    assert report["naive_weight"] == 0.3 and "msis" in report and report["intervals"]["0.8"]["lower"] == 0.1
    shown = ok("evaluate", run.name, "--runs-dir", run.parent).stdout
    assert "80% interval [0.1, 0.9]" in shown and "blend: 0.3 x the network" in shown

    answers = json.loads(ok("predict", path, "--run", run.name, "--runs-dir", run.parent, "--json").stdout)
    for a in answers:
        for step in a["forecast"]:
            q = step["quantiles"]
            assert q["0.1"] <= q["0.5"] <= q["0.9"] and q["0.5"] == step["value"]
    import dlcli

    assert dlcli.load(run).predict(path) == answers
    fresh = json.loads(ok("predict", new, "--run", run.name, "--runs-dir", run.parent, "--json").stdout)[0]

    # the blend: 0.3 x the network's quantiles, each moved by 0.7 x (seasonal naive - the network's median)
    from dlcli.data.series import Frequency, history_windows, read_series_table
    from dlcli.loaded import load_run, read_data_info

    loaded = load_run(run, "best", "cpu")
    state = read_data_info(run)["preprocessing"]
    x, y = history_windows(loaded.cfg.data, read_series_table(loaded.cfg.data, path), Frequency.from_dict(
        state["frequency"]), state, path)
    loaded.task._weight = 1.0
    raw = loaded.task.quantile_forecasts(loaded.logits(x), y).numpy()
    naive = loaded.task._parts(y)["naive"].numpy()
    blended = raw + 0.7 * (naive - raw[..., 1])[..., None]
    got = np.array([[[s["quantiles"][k] for k in ("0.1", "0.5", "0.9")] for s in a["forecast"]] for a in answers])
    np.testing.assert_allclose(got, blended[:, :, 0], rtol=1e-5)

    ort = pytest.importorskip("onnxruntime")
    out = ok("export", run.name, "--runs-dir", run.parent)
    assert "output 'forecast' N x 3 x 1 x 3" in out.output
    model = out.stdout.strip().splitlines()[-1]
    from dlcli.export import read_metadata

    assert read_metadata(model)["quantiles"] == LEVELS and float(read_metadata(model)["naive_weight"]) == 0.3
    side = json.loads(open(model.replace(".onnx", ".series.json")).read())
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    rows = {}
    for line in open(path).read().splitlines()[1:]:
        _, sid, sales, _ = line.split(",")
        rows.setdefault(sid, []).append([float(sales)])
    for a in answers:
        s = side["series"][a["series"]]
        window = np.array(rows[a["series"]][-12:], np.float32)[None]
        found = session.run(None, {"input": window, "series_mean": np.float32([s["mean"]]),
                                   "series_std": np.float32([s["std"]])})[0]
        want = [[st["quantiles"][k] for k in ("0.1", "0.5", "0.9")] for st in a["forecast"]]
        np.testing.assert_allclose(found[0, :, 0], want, rtol=1e-5)
    history = np.array([float(ln.split(",")[2]) for ln in open(new).read().splitlines()[1:]])
    found = session.run(None, {"input": history[-12:, None].astype(np.float32)[None],
                               "series_mean": np.float32([[history.mean()]]),
                               "series_std": np.float32([[history.std()]])})[0]
    np.testing.assert_allclose(found[0, :, 0], [[st["quantiles"][k] for k in ("0.1", "0.5", "0.9")]
                                                for st in fresh["forecast"]], rtol=1e-5)

    pytest.importorskip("fastapi")
    from tests.test_serve import http, serving

    with serving(run) as (url, _):
        status, served = http(url + "predict", json.dumps({"id": "s0", "series": [r[0] for r in rows["s0"]]}).encode())
        assert status == 200, served
        np.testing.assert_allclose([[st["quantiles"][k] for k in ("0.1", "0.5", "0.9")] for st in
                                    served[0]["forecast"]], [[st["quantiles"][k] for k in ("0.1", "0.5", "0.9")]
                                                            for st in answers[0]["forecast"]], rtol=1e-5)
