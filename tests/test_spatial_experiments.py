"""Experiments on the spatial tasks: a sweep over a detector ranks its trials by val_map, one over a segmenter by
val_miou (each trial's figure read back from its own metrics.jsonl), best.yaml takes the winner's values, and `runs
compare` lines the trials' headline metrics up side by side."""

import json
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
import make_scenes  # noqa: E402

optuna = pytest.importorskip("optuna", reason="pip install -e '.[dev]' installs optuna")


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes")
    make_scenes.write_scenes(out, n=36, kind="shapes", size=48, seed=3, layouts=("coco",), max_objects=2)
    return out


def coco(scenes: Path) -> dict:
    return {"dataset": "coco", "image_size": 48,
            **{f"{s}_annotations": str(scenes / "annotations" / f"instances_{s}.json") for s in ("train", "val", "test")}}


CONFIGS = {
    "detection": ({"type": "detector", "channels": [8, 16, 16, 16, 16], "width": 16}, "val_map", "map"),
    "segmentation": ({"type": "unet", "width": 4, "depth": 2}, "val_miou", "miou"),
}


@pytest.mark.parametrize("task", sorted(CONFIGS))
def test_a_sweep_ranks_trials_by_the_tasks_metric_and_compare_shows_it(task, scenes, cli, tmp_path):
    model, metric, headline = CONFIGS[task]
    config = {"name": f"sweep_{task}", "seed": 0, "task": task, "data": coco(scenes), "model": model,
              "optimizer": {"name": "adam", "lr": 0.003},
              "train": {"epochs": 2, "batch_size": 8, "precision": "32"},
              "sweep": {"trials": 2, "sampler": "random", "pruner": None,
                        "space": {"optimizer.lr": {"choice": [0.01, 0.00001]}}}}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config))
    runs = tmp_path / "runs"
    result = cli("sweep", path, "--runs-dir", runs)
    assert result.exit_code == 0, result.output
    study = optuna.load_study(study_name=f"sweep_{task}",
                              storage=f"sqlite:///{runs / 'sweeps' / f'sweep_{task}' / 'study.db'}")
    trials = [t for t in study.trials if t.value is not None]
    assert len(trials) == 2
    for trial in trials:  # each trial's value is its run's best validation figure of the task's metric
        run = runs / trial.user_attrs["run_id"]
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert trial.value == pytest.approx(max(r[metric] for r in rows), abs=1e-9)
    best = max(trials, key=lambda t: t.value)
    assert study.best_trial.number == best.number
    chosen = yaml.safe_load((runs / "sweeps" / f"sweep_{task}" / "best.yaml").read_text())
    assert chosen["optimizer"]["lr"] == best.params["optimizer.lr"]

    ids = [t.user_attrs["run_id"] for t in trials]
    result = cli("runs", "compare", *ids, "--runs-dir", runs, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["differ"] == {"optimizer.lr": [t.params["optimizer.lr"] for t in trials]}
    assert report["metrics"][f"best {metric}"] == pytest.approx([t.value for t in trials], abs=1e-9)
    tested = [json.loads((runs / i / "summary.json").read_text())["test"][headline] for i in ids]
    assert report["metrics"][f"test {headline}"] == pytest.approx(tested, abs=1e-12)
