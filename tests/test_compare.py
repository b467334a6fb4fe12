"""`dlcli train --repeat`, `dlcli runs --where/--sort` and `dlcli runs compare`."""

import json
import math
from pathlib import Path

import yaml

from tests.conftest import tiny_config


def run_ids(result) -> list[str]:
    assert result.exit_code == 0, result.output
    return result.stdout.strip().splitlines()


def test_repeat_trains_one_run_per_seed_and_reports_mean_and_std(cli, write_config, tmp_path):
    root = tmp_path / "runs"
    result = cli("train", write_config(tiny_config(seed=5)), "--repeat", "3", "--runs-dir", root)
    ids = run_ids(result)
    assert len(ids) == 3 and len(set(ids)) == 3
    summaries = [json.loads((root / i / "summary.json").read_text()) for i in ids]
    tags = [json.loads((root / i / "tags.json").read_text()) for i in ids]
    assert [t["seed"] for t in tags] == [5, 6, 7] and len({t["repeat"] for t in tags}) == 1
    assert [yaml.safe_load((root / i / "config.yaml").read_text())["seed"] for i in ids] == [5, 6, 7]
    losses = [s["test"]["loss"] for s in summaries]
    mean = sum(losses) / 3
    std = math.sqrt(sum((x - mean) ** 2 for x in losses) / 2)
    assert len(set(losses)) == 3  # three seeds, three different runs
    assert f"test loss {mean:.4f} +- {std:.4f} (mean +- std of 3 runs, seeds 5..7" in result.stderr

    listed = cli("runs", "--runs-dir", root)
    assert listed.exit_code == 0, listed.output
    accs = [s["test"]["accuracy"] for s in summaries]
    acc_mean = sum(accs) / 3
    acc_std = math.sqrt(sum((x - acc_mean) ** 2 for x in accs) / 2)
    assert "mean +- std of 3 runs" in listed.stdout and f"{acc_mean:.4f} +- {acc_std:.4f}" in listed.stdout
    assert "repeat 2/3 (seed 6)" in listed.stdout


def test_runs_where_and_sort(cli, write_config, tmp_path):
    root = tmp_path / "runs"
    repeats = run_ids(cli("train", write_config(tiny_config()), "--repeat", "2", "--runs-dir", root, "-q"))
    other = tiny_config(name="other", optimizer={"name": "sgd", "lr": 0.05}, train={"epochs": 1, "batch_size": 16})
    (odd,) = run_ids(cli("train", write_config(other, "other.yaml"), "--runs-dir", root, "-q"))

    def listed(*args) -> list[str]:
        result = cli("runs", "--runs-dir", root, "--json", *args)
        assert result.exit_code == 0, result.output
        return [row["id"] for row in json.loads(result.stdout)]

    assert sorted(listed()) == sorted([*repeats, odd])  # ids of one second sort by their -N suffix
    assert listed("--where", "optimizer.name=sgd") == [odd]
    assert listed("--where", "optimizer.lr>0.02") == [odd]
    assert listed("--where", "train.batch_size=32", "--where", "seed>=1") == [repeats[1]]  # a config key, a tag
    assert listed("--where", "id=other-*") == [odd]
    assert listed("--where", "status=completed", "--where", "dataset!=synthetic") == []
    assert listed("--where", "repeat!=tiny-*") == [odd]  # a run without the tag is not equal to any value
    accs = {row["id"]: row["test_accuracy"] for row in json.loads(cli("runs", "--runs-dir", root, "--json").stdout)}
    by_acc = listed("--sort=-test_accuracy")
    assert [accs[i] for i in by_acc] == sorted(accs.values(), reverse=True)
    assert listed("--sort", "train.epochs")[0] == odd and listed("--sort=-train.batch_size")[-1] == odd
    bad = cli("runs", "--runs-dir", root, "--where", "optimizer.lr")
    assert bad.exit_code == 2 and bad.stderr.startswith("error: --where 'optimizer.lr': expected KEY=VALUE")


def test_compare_shows_exactly_the_keys_that_differ_then_metrics_and_a_plot(cli, write_config, tmp_path):
    root = tmp_path / "runs"
    base = tiny_config()
    (a,) = run_ids(cli("train", write_config(base, "a.yaml"), "--runs-dir", root, "-q"))
    changed = {**base, "optimizer": {"name": "adam", "lr": 0.003}, "train": {"epochs": 2, "batch_size": 16}}
    (b,) = run_ids(cli("train", write_config(changed, "b.yaml"), "--runs-dir", root, "-q"))

    result = cli("runs", "compare", a, b, "--runs-dir", root, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["runs"] == [a, b]
    assert report["differ"] == {"optimizer.lr": [0.01, 0.003], "train.batch_size": [32, 16]}
    summaries = [json.loads((root / r / "summary.json").read_text()) for r in (a, b)]
    assert report["metrics"]["test accuracy"] == [s["test"]["accuracy"] for s in summaries]
    assert report["metrics"]["epochs"] == ["2/2", "2/2"]

    text = cli("runs", "compare", a, b, "--runs-dir", root, "--plot", "-o", tmp_path / "both.png")
    assert text.exit_code == 0, text.output
    keys = [line.split("│")[1].strip() for line in text.stdout.split("metrics")[0].splitlines()
            if line.startswith("│")]
    assert sorted(keys) == ["optimizer.lr", "train.batch_size"]
    assert "config keys that differ (2;" in text.stdout and "test accuracy" in text.stdout
    assert Path(text.stdout.strip().splitlines()[-1]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    same = cli("runs", "compare", a, a, "--runs-dir", root)
    assert same.exit_code == 2 and "two or more different runs" in same.stderr
