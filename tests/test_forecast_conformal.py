"""task: forecast with `intervals: conformal`: a point network, and central intervals at +- the empirical quantile
(per horizon step, split conformal's finite-sample rank) of its absolute errors over every training and validation
window, in series standard deviations. Checked against numpy computed here from the same numbers, and on a series
whose noise is known."""

import json
import math

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from dlcli.cli import app
from dlcli.tasks import parse_task
from tests.test_forecast_intervals import random_rows
from tests.test_series import series_cfg

LEVELS = [0.05, 0.1, 0.5, 0.9]  # 0.05 alone: a 90% interval's lower end; 0.1 and 0.9: an 80% interval


def conformal_task(H, K=1, **info):
    return parse_task({"type": "forecast", "quantiles": [0.9, 0.05, 0.1], "intervals": "conformal"}).bind(
        {"horizon": H, "targets": ["a"] * K, "season": 3, **info}, ["o"] * (H * K))  # the head: the point alone


def test_conformal_offsets_are_the_rank_statistics_of_the_scaled_errors():
    rng = np.random.default_rng(3)
    B, H, K = 37, 4, 1
    task = conformal_task(H)
    assert task.levels() == LEVELS and task.head_levels() == []
    y, p = random_rows(rng, B, H, K)
    out = rng.normal(0, 1, (B, H * K))
    out_t = torch.tensor(out, dtype=torch.float32)
    point = (out.reshape(B, H, K) + p["base"]) * p["std"][:, None] + p["mean"][:, None]
    errors = np.sort(np.abs(p["truth"] - point) / p["std"][:, None], axis=0)  # (B, H, K), each step on its own
    want = []
    for q in LEVELS:
        k = min(math.ceil((B + 1) * abs(1 - 2 * q)), B)  # 0.9 -> 0.8 coverage -> the 30th of 37
        want.append(0 * errors[0] if k == 0 else np.sign(q - 0.5) * errors[k - 1])
    want = np.stack(want, -1)
    tuned = task.tune_history(out_t, y)
    assert tuned["conformal_windows"] == B
    np.testing.assert_allclose(tuned["conformal_offsets"], want, rtol=1e-5)
    assert want[..., 2].max() == 0 and (want[..., 0] < want[..., 1]).all() and (want[..., 3] > 0).all()

    task = conformal_task(H, **tuned)
    bands = task.quantile_forecasts(out_t, y).numpy()
    np.testing.assert_allclose(bands, point[..., None] + want[None] * p["std"][:, None, :, None], atol=1e-4)
    np.testing.assert_allclose(task.forecasts(out_t, y).numpy(), point, atol=1e-4)
    truth = y[:, :H * K].reshape(B, H, K).double().numpy()  # as the report reads it (the edges are errors' ranks)
    inside = ((truth >= bands[..., 1]) & (truth <= bands[..., 3])).mean()
    assert task.report(out_t, y)["intervals"]["0.8"]["coverage"] == pytest.approx(inside)
    assert inside >= 0.8  # on the windows it was calibrated on, at least the nominal share (the finite-sample rank)

    # with a blend, the errors are the blended point's (each quantile moves with it)
    blended = conformal_task(H, naive_weight=0.4)
    found = blended.tune_history(out_t, y)
    mixed = 0.4 * point + 0.6 * p["naive"]
    errors = np.sort(np.abs(p["truth"] - mixed) / p["std"][:, None], axis=0)
    np.testing.assert_allclose(np.array(found["conformal_offsets"])[..., 3], errors[math.ceil(38 * 0.8) - 1],
                               rtol=1e-5)


def test_untuned_conformal_forecasts_the_point_and_trains_on_the_point_loss():
    rng = np.random.default_rng(4)
    B, H = 10, 3
    task = conformal_task(H)
    y, p = random_rows(rng, B, H, 1)
    out_t = torch.tensor(rng.normal(0, 1, (B, H)), dtype=torch.float32)
    bands = task.quantile_forecasts(out_t, y)
    assert bands.shape == (B, H, 1, 4) and torch.equal(bands[..., 0], bands[..., 2])
    z = (p["truth"] - p["mean"][:, None]) / p["std"][:, None] - p["base"]
    assert task.criterion(out_t, y).item() == pytest.approx(np.abs(out_t.numpy() - z[..., 0]).mean(), rel=1e-5)


@pytest.mark.parametrize("task, message", [
    ({"type": "forecast", "intervals": "conformal"}, "intervals: conformal gives intervals at the quantile levels"),
    ({"type": "forecast", "intervals": "split", "quantiles": [0.1]}, "task.intervals: Input should be 'head' or"),
])
def test_bad_intervals_are_one_line_errors(tmp_path, cli, write_config, task, message):
    from tests.test_series import monthly_csv

    cfg = series_cfg(monthly_csv(tmp_path / "m.csv", n=48), lookback=12, horizon=3)
    cfg["task"] = task
    result = cli("validate", write_config(cfg))
    assert result.exit_code == 2 and message in result.output and len(result.output.strip().splitlines()) == 1


def noisy_csv(path, series=24, n=72, noise=3.0, seed=0):
    """Series with a 12-month season and gaussian noise of a known size: a forecast cannot do better than the noise,
    so an honest 80% interval holds about 80% of new values."""
    rng = np.random.default_rng(seed)
    months = np.arange(np.datetime64("2015-01", "M"), np.datetime64("2015-01", "M") + n)
    t = np.arange(n)
    lines = ["date,store,sales"]
    for s in range(series):
        y = 100 + 10 * np.sin(2 * np.pi * (t + s) / 12) + rng.normal(0, noise, n)
        lines += [f"{m}-01,s{s},{v:.4f}" for m, v in zip(months, y)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_conformal_intervals_of_a_known_noise_series_hold_about_80_percent(tmp_path):
    path = noisy_csv(tmp_path / "noise.csv")
    cfg = series_cfg(path, lookback=12, horizon=6)
    cfg["model"] = {"type": "sequential", "layers": ["flatten", {"dense": "outputs"}]}
    cfg["task"] = {"type": "forecast", "quantiles": [0.1, 0.5, 0.9], "intervals": "conformal"}
    cfg["train"]["epochs"] = 12
    (tmp_path / "fc.yaml").write_text(yaml.safe_dump(cfg))
    result = CliRunner().invoke(app, ["train", str(tmp_path / "fc.yaml"), "--runs-dir", str(tmp_path / "runs")])
    assert result.exit_code == 0, result.output
    run = next((tmp_path / "runs").iterdir())
    info = json.loads((run / "data.json").read_text())["task"]
    assert info["conformal_windows"] > 500  # every training and validation window of the 24 series
    offsets = np.array(info["conformal_offsets"])  # (horizon, targets, levels) in series stds
    assert offsets.shape == (6, 1, 3) and (offsets[..., 0] < 0).all() and (offsets[..., 2] > 0).all()
    report = json.loads(CliRunner().invoke(app, ["evaluate", run.name, "--runs-dir", str(tmp_path / "runs"),
                                                 "--json"]).stdout)
    assert report["interval_method"] == "conformal"
    # 144 test values (24 series x 6 steps): about 80% inside; 0.8 +- 3 binomial standard deviations (0.033)
    assert 0.7 <= report["intervals"]["0.8"]["coverage"] <= 0.9, report["intervals"]
    std = np.array([s["std"][0] for s in json.loads((run / "data.json").read_text())["preprocessing"]["series"]
                    .values()]).mean()
    # the noise's own 80% interval is +- 1.2816 x 3; the learnt one is near it (the fit adds some error)
    assert 1.2816 * 3 * 0.9 <= offsets[..., 2].mean() * std <= 1.2816 * 3 * 1.4
