"""The baseline for tables: an MLP trained on a CSV or Parquet table by the script a competent user writes by hand.

The table read with pyarrow (CSV or Parquet), the features copied column by column into one float32 matrix, the
labels turned into class indices, a seeded 80/10/10 train/val/test split, standardisation with the training mean
and std (numpy), then the MLP trained over preloaded tensors (seeded permutation, batches cut by indexing; Adam, no
per-step .item()) and scored on the validation and test rows. Prints one JSON line at the end.

    python benchmarks/plain_table.py /tmp/dlcli-bench-tables/data/table-1000000.parquet --epochs 1
"""

import argparse
import json
import time

import numpy as np
import pyarrow as pa
import torch
from torch import nn


def read(path: str) -> pa.Table:
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        return pq.read_table(path)
    import pyarrow.csv as pacsv

    return pacsv.read_csv(path)


def accuracy(model, x, y, batch=4096) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            correct += (model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum().item()
    return correct / max(len(y), 1)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("file", help="a .csv or .parquet table with a label column")
    parser.add_argument("--label", default="label")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--hidden", default="64,32")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    torch.manual_seed(args.seed)

    table = read(args.file)
    features = [c for c in table.column_names if c != args.label]
    x = np.empty((table.num_rows, len(features)), dtype=np.float32)
    for j, name in enumerate(features):  # one column at a time: no float64 copy of the whole table
        x[:, j] = table.column(name).to_numpy()
    classes, y = np.unique(table.column(args.label).to_numpy(), return_inverse=True)
    del table

    order = np.random.default_rng(args.seed).permutation(len(y))
    n_val = n_test = len(y) // 10
    test_idx, val_idx, train_idx = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    mean = x[train_idx].mean(0)
    std = x[train_idx].std(0) + 1e-6
    x -= mean
    x /= std
    x, y = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    train_x, train_y = x[train_idx], y[train_idx]
    val_x, val_y, test_x, test_y = x[val_idx], y[val_idx], x[test_idx], y[test_idx]
    del x, y
    loaded = time.perf_counter()

    layers, width = [], len(features)
    for units in (int(h) for h in args.hidden.split(",")):
        layers += [nn.Linear(width, units), nn.ReLU()]
        width = units
    model = nn.Sequential(*layers, nn.Linear(width, len(classes)))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()

    generator = torch.Generator().manual_seed(args.seed)
    for _ in range(args.epochs):
        model.train()
        perm = torch.randperm(len(train_y), generator=generator)
        for i in range(0, len(train_y), args.batch_size):
            idx = perm[i : i + args.batch_size]
            loss = loss_fn(model(train_x[idx]), train_y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    trained = time.perf_counter()

    val_acc, test_acc = accuracy(model, val_x, val_y), accuracy(model, test_x, test_y)
    print(f"test accuracy {test_acc:.4f}")
    print(json.dumps({"rows": len(train_y) + len(val_y) + len(test_y), "classes": len(classes),
                      "load_seconds": loaded - started, "train_seconds": trained - loaded,
                      "samples_per_second": len(train_y) * args.epochs / (trained - loaded),
                      "val_accuracy": val_acc, "test_accuracy": test_acc}))


if __name__ == "__main__":
    main()
