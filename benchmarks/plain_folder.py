"""The baseline for image_folder.py: the torchvision ImageFolder + DataLoader tutorial loop, as users write it.

    python benchmarks/plain_folder.py --root /tmp/dlcli-bench-folder/pictures/train [--test-share 0.1]

torchvision.datasets.ImageFolder with ToTensor + Normalize (the usual ImageNet mean/std), a seeded random_split
(--val-share and --test-share held out, the rest trains), DataLoader(batch_size=64, shuffle=True, num_workers=2),
the CNN of dlcli's `{type: cnn, channels: [32, 64], padding: same, hidden: [128]}` preset, Adam 1e-3, one epoch,
a pass over the validation share after each epoch (when there is a test share too: dlcli makes the same pass),
then accuracy on the held-out test share (the validation share, when there is no test share). Prints one JSON line.
"""

import argparse
import json
import time

started = time.perf_counter()

import torch
from torch import nn
from torch.utils.data import DataLoader, random_split
from torchvision import datasets, transforms


def make_model(channels: int, size: int, classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * (size // 4) * (size // 4), 128), nn.ReLU(), nn.Linear(128, classes),
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="the folder with one sub-folder per class")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--val-share", type=float, default=0.1)
    parser.add_argument("--test-share", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    transform = transforms.Compose([
        transforms.ToTensor(),
        transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
    ])
    dataset = datasets.ImageFolder(args.root, transform=transform)
    n = len(dataset)
    n_test, n_val = round(n * args.test_share), round(n * args.val_share)
    train_set, val_set, test_set = random_split(dataset, [n - n_val - n_test, n_val, n_test],
                                                generator=torch.Generator().manual_seed(args.seed))
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, num_workers=args.workers)
    val_loader = DataLoader(val_set, batch_size=args.batch_size, shuffle=False, num_workers=args.workers)
    test_loader = DataLoader(test_set if n_test else val_set, batch_size=args.batch_size, shuffle=False,
                             num_workers=args.workers)

    model = make_model(3, args.image_size, len(dataset.classes))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def accuracy(loader):
        model.eval()
        correct = total = 0
        with torch.no_grad():
            for x, y in loader:
                correct += (model(x).argmax(1) == y).sum().item()
                total += len(y)
        return correct / total, total

    train_started = time.perf_counter()
    for _ in range(args.epochs):
        model.train()
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
        if n_test and n_val:  # the validation pass after each epoch, as dlcli makes one
            val_accuracy, _ = accuracy(val_loader)
    train_seconds = time.perf_counter() - train_started

    test_accuracy, total = accuracy(test_loader)
    print(json.dumps({
        "test_accuracy": test_accuracy,
        "val_accuracy": val_accuracy if n_test and n_val else test_accuracy,
        "test_samples": total,
        "train_samples": len(train_set),
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds_to_first_batch_loop": round(train_started - started, 3),
        "train_seconds": round(train_seconds, 3),
        "images_per_second": round(len(train_set) * args.epochs / train_seconds, 1),
    }))


if __name__ == "__main__":
    main()
