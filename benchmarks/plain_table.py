"""The baseline for tables: an MLP trained on a CSV or Parquet table by the script a competent user writes by hand.

The table read with pyarrow (CSV or Parquet), the features copied column by column into a float32 matrix and
transposed once into rows, the labels turned into class indices (Arrow), a seeded 80/10/10 train/val/test split,
standardisation with the training mean and std (torch.std_mean, in place), then the MLP trained over preloaded
tensors (seeded permutation, batches cut by indexing; Adam, no per-step .item()) and scored on the validation and
test rows. Prints one JSON line at the end.

    python benchmarks/plain_table.py /tmp/dlcli-bench-tables/data/table-1000000.parquet --epochs 1
"""

import argparse
import json
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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
    labels = table.column(args.label)
    classes = pa.array(np.sort(pc.unique(labels).to_numpy(zero_copy_only=False)))
    y = pc.index_in(labels, value_set=classes).to_numpy().astype(np.int64)  # class indices, in sorted order
    columns = np.empty((len(features), table.num_rows), dtype=np.float32)  # one contiguous row per feature ...
    for j, name in enumerate(features):
        columns[j] = table.column(name).to_numpy()
    del table
    x = torch.from_numpy(np.ascontiguousarray(columns.T))  # ... then one transposing copy: rows of features
    y = torch.from_numpy(y)
    del columns

    order = torch.from_numpy(np.random.default_rng(args.seed).permutation(len(y)))
    n_val = n_test = len(y) // 10
    test_idx, val_idx, train_idx = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    train_x, train_y = x[train_idx], y[train_idx]
    val_x, val_y, test_x, test_y = x[val_idx], y[val_idx], x[test_idx], y[test_idx]
    del x, y
    std, mean = torch.std_mean(train_x, dim=0, correction=0)
    std += 1e-6
    for split in (train_x, val_x, test_x):
        split.sub_(mean).div_(std)
    loaded = time.perf_counter()

    layers, width = [], len(features)
    for units in (int(h) for h in args.hidden.split(",")):
        layers += [nn.Linear(width, units), nn.ReLU()]
        width = units
    model = nn.Sequential(*layers, nn.Linear(width, len(classes)))
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    loss_fn = nn.CrossEntropyLoss()

    built = time.perf_counter()
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
                      "load_seconds": loaded - started, "build_seconds": built - loaded,
                      "train_seconds": trained - built,
                      "samples_per_second": len(train_y) * args.epochs / (trained - built),
                      "val_accuracy": val_acc, "test_accuracy": test_acc}))


if __name__ == "__main__":
    main()
