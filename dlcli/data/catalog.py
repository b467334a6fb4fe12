"""The dataset registry: names, shapes and class names, known without loading (or importing torch)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    name: str
    kind: str  # the reader in dlcli.data.loaders: idx, cifar, folder or synthetic
    shape: tuple[int, ...] | None  # None: given by the config (synthetic)
    classes: tuple[str, ...] | None
    torchvision: str | None = None  # torchvision's class for the download
    debian: str | None = None  # folder under /usr/share/datasets from Debian's dataset-* packages

    def describe(self, data_cfg) -> tuple[tuple[int, ...], list[str], int | None]:
        """(input shape, class names, vocabulary size for token data or None)."""
        if self.kind == "folder":
            from pathlib import Path

            from dlcli.data.folders import folder_classes, image_size

            return (data_cfg.channels, *image_size(data_cfg)), folder_classes(Path(data_cfg.root)), None
        if self.kind == "synthetic":
            syn = data_cfg.synthetic
            return tuple(syn.shape), [f"class_{i}" for i in range(syn.num_classes)], None
        return self.shape, list(self.classes), None


DIGITS = tuple(str(i) for i in range(10))
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
KMNIST = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
CIFAR10 = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

DATASETS: dict[str, Source] = {
    s.name: s
    for s in [
        Source("mnist", "idx", (1, 28, 28), DIGITS, "MNIST", "mnist"),
        Source("fashion_mnist", "idx", (1, 28, 28), FASHION, "FashionMNIST", "fashion-mnist"),
        Source("kmnist", "idx", (1, 28, 28), KMNIST, "KMNIST", "kmnist"),
        Source("cifar10", "cifar", (3, 32, 32), CIFAR10, "CIFAR10"),
        Source("cifar100", "cifar", (3, 32, 32), None, "CIFAR100"),
        Source("image_folder", "folder", None, None),
        Source("csv", "table", None, None),
        Source("text_csv", "table", None, None),
        Source("synthetic", "synthetic", None, None),
    ]
}


def describe(cfg) -> tuple[tuple[int, ...], list[str], int | None]:
    """(input shape without the batch axis, class names, vocabulary size or None) of the configured dataset.

    Built-in datasets answer from the catalog; CSV files are read, split and fitted as training would.
    """
    data_cfg = cfg.data
    source = DATASETS[data_cfg.dataset]
    if source.kind == "table":
        from dlcli.data.bundle import load_data

        data = load_data(cfg)
        return data.input_shape, data.classes, data.vocab_size
    if source.classes is None and source.kind == "cifar":
        return source.shape, [str(i) for i in range(100)], None  # real names come with the files
    return source.describe(data_cfg)
