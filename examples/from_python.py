"""dlcli from Python: train on a DataFrame, evaluate, predict on arrays and rows, reload a run.

    python examples/from_python.py          # runs go to $DLCLI_RUNS_DIR or runs/

Needs pandas (pip install pandas); everything else comes with dlcli. About 20 seconds on 2 CPU cores.
"""

import numpy as np
import pandas as pd

import dlcli

# 1. A regression on a table that lives in memory: house prices from size, rooms and area.
rng = np.random.default_rng(0)
n = 600
houses = pd.DataFrame({
    "size": rng.uniform(30, 200, n).round(1),
    "rooms": rng.integers(1, 7, n),
    "area": rng.choice(["centre", "suburb", "village"], n),
})
houses["price"] = (2_000 * houses["size"] + 15_000 * houses["rooms"]
                   + houses["area"].map({"centre": 90_000, "suburb": 30_000, "village": 0})
                   + rng.normal(0, 10_000, n)).round(-2)

config = {
    "name": "houses",
    "task": "regression",
    "data": {"dataset": "csv", "label_column": "price"},  # no train_file: the DataFrame is the data
    "model": {"type": "mlp", "hidden": [64, 64]},
    "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.0001},
}
epochs = []
run = dlcli.train(config, overrides={"train.epochs": 40}, data=houses, quiet=True, callbacks=epochs.append)
print(f"trained {run.id}: {len(epochs)} epochs, last val_r2 {epochs[-1]['val_r2']:.3f}")

report = run.evaluate(data=houses)  # the run's test rows are cut from the frame it trained on
print(f"test r2 {report['r2']:.3f}, mae {report['mae']:,.0f}")

new = pd.DataFrame({"size": [55.0, 140.0], "rooms": [2, 5], "area": ["centre", "village"]})
for row, answer in zip(new.itertuples(), run.predict(new)):
    print(f"{row.size:>6} m2, {row.rooms} rooms, {row.area:<8} -> {answer['prediction']:>10,.0f}")

# 2. An image classifier on arrays: synthetic 8x8 grayscale pictures of three kinds.
images = dlcli.train({
    "name": "shapes",
    "data": {"dataset": "synthetic", "shape": [1, 8, 8], "num_classes": 3, "train_samples": 600},
    "model": {"type": "cnn", "channels": [8], "hidden": [32], "padding": "same"},
    "train": {"epochs": 5},
}, quiet=True)
pixels = rng.integers(0, 256, (4, 8, 8), dtype=np.uint8)  # any uint8 batch (N, H, W[, C]), a PIL image, a tensor
for answer in images.predict(pixels, top_k=2):
    best = answer["top"][0]
    print(f"{answer['image']}: {best['label']} ({best['probability']:.2f})")

# 3. Runs are reloaded by id, prefix or `latest`; their metrics come back as a DataFrame.
again = dlcli.load(run.id)
print(again.metrics_frame()[["train_loss", "val_loss", "val_r2"]].tail(3).round(4))
print([r.id for r in dlcli.runs(where="task=regression")][-1] == run.id)
