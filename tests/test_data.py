"""Datasets: IDX files found without a download, the tensor cache, splits, statistics and augmentations."""

import gzip
import os
from types import SimpleNamespace

import pytest
import torch

from dlcli.augment import AUGMENTS
from dlcli.config import validate_config
from dlcli.data import load_data, statistics
from dlcli.data.loaders import IDX_FILES, read_idx
from dlcli.errors import DlcliError


def write_idx(path, tensor, compress):
    header = bytes([0, 0, 0x08, tensor.dim()]) + b"".join(d.to_bytes(4, "big") for d in tensor.shape)
    payload = header + tensor.numpy().tobytes()
    if compress:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def fake_mnist(directory, n_train=50, n_test=20, compress=True):
    directory.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    images = [torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=g) for n in (n_train, n_test)]
    labels = [torch.arange(n, dtype=torch.uint8) % 10 for n in (n_train, n_test)]
    for name, t in zip(IDX_FILES, [images[0], labels[0], images[1], labels[1]]):
        write_idx(directory / name, t, compress)
    return images, labels


def mnist_config(root, **data):
    return validate_config({"seed": 1, "data": {"dataset": "mnist", "root": str(root), "download": False, **data},
                            "model": {"type": "mlp"}})


@pytest.mark.parametrize("compress", [True, False])
def test_idx_files_in_root_are_used_without_download(tmp_path, compress):
    images, labels = fake_mnist(tmp_path / "mnist", compress=compress)
    data = load_data(mnist_config(tmp_path, val_split=0.2))
    assert len(data.train) == 40 and len(data.val) == 10 and len(data.test) == 20
    assert data.input_shape == (1, 28, 28) and data.train.x.dtype == torch.uint8
    assert torch.equal(data.test.x[:, 0], images[1]) and data.classes[3] == "3"
    # train and val are a partition of the original training set
    together = torch.cat([data.train.x, data.val.x]).flatten(1).sum(1).sort().values
    assert torch.equal(together, images[0].flatten(1).sum(1).sort().values)


def test_dlcli_data_environment_variable(tmp_path, monkeypatch):
    fake_mnist(tmp_path / "elsewhere" / "mnist")
    monkeypatch.setenv("DLCLI_DATA", str(tmp_path / "elsewhere"))
    assert len(load_data(mnist_config(tmp_path / "empty", val_split=0)).train) == 50


def test_parsed_tensors_are_cached_and_invalidated_when_the_source_changes(tmp_path):
    fake_mnist(tmp_path / "mnist", n_train=30)
    load_data(mnist_config(tmp_path))
    caches = list((tmp_path / ".cache").glob("mnist-*.pt"))
    assert len(caches) == 1
    cached = torch.load(caches[0], weights_only=True)
    assert cached["train_x"].shape == (30, 1, 28, 28)
    fake_mnist(tmp_path / "mnist", n_train=35)  # new contents, new size and mtime
    os.utime(tmp_path / "mnist" / "train-images-idx3-ubyte.gz", ns=(1, 1))
    assert len(load_data(mnist_config(tmp_path, val_split=0)).train) == 35
    assert len(list((tmp_path / ".cache").glob("mnist-*.pt"))) == 2


def test_max_train_samples_and_val_split_are_seeded(tmp_path):
    fake_mnist(tmp_path / "mnist", n_train=100)
    a = load_data(mnist_config(tmp_path, val_split=0.1, max_train_samples=25))
    b = load_data(mnist_config(tmp_path, val_split=0.1, max_train_samples=25))
    assert len(a.train) == 25 and len(a.val) == 10
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.y, b.val.y)


def test_truncated_and_foreign_idx_files_are_clear_errors(tmp_path):
    fake_mnist(tmp_path / "mnist", compress=False)
    path = tmp_path / "mnist" / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DlcliError, match="truncated IDX file"):
        load_data(mnist_config(tmp_path))
    path.write_bytes(b"PNG not an idx file")
    with pytest.raises(DlcliError, match="not an IDX file"):
        read_idx(path)


def test_normalisation_statistics_come_from_the_training_split():
    x = torch.tensor([[[[0, 255]]], [[[255, 255]]]], dtype=torch.uint8)  # (2, 1, 1, 2)
    mean, std, image = statistics(x)
    assert image and mean == pytest.approx([191.25]) and std == pytest.approx([110.42], abs=0.01)
    data = load_data(validate_config({"data": {"dataset": "synthetic", "shape": [3, 4, 4]},
                                      "model": {"type": "mlp"}}))
    normalised = data.normalizer(data.train.x)
    assert normalised.mean((0, 2, 3)).abs().max() < 1e-4
    assert (normalised.std((0, 2, 3)) - 1).abs().max() < 1e-2


def augment(spec):
    return AUGMENTS.parse(spec)


def test_hflip_with_p_1_mirrors_every_image():
    x = torch.randn(4, 3, 5, 6)
    assert torch.equal(augment({"hflip": 1.0})(x), x.flip(3))
    assert torch.equal(augment({"hflip": 0.0})(x), x)


def test_random_crop_shifts_content_within_the_padding():
    torch.manual_seed(0)
    x = torch.arange(1, 26, dtype=torch.float).view(1, 1, 5, 5).repeat(64, 1, 1, 1)
    out = augment({"random_crop": 2})(x)
    assert out.shape == x.shape
    assert any(not torch.equal(o, x[0]) for o in out)
    for o in out:  # each output is the padded image cut at some offset within 2 pixels
        padded = torch.nn.functional.pad(x[0], (2, 2, 2, 2))
        assert any(torch.equal(o, padded[:, dy:dy + 5, dx:dx + 5]) for dy in range(5) for dx in range(5))


def test_cutout_zeroes_one_square_per_image():
    torch.manual_seed(0)
    x = torch.ones(32, 1, 28, 28)
    out = augment({"cutout": 4})(x)
    zeros = (out == 0).sum((1, 2, 3))
    assert zeros.max() == 16 and zeros.min() >= 1  # a square cut by the border keeps at least a corner


def test_identity_affine_keeps_the_image_and_rotation_moves_it():
    x = torch.randn(2, 1, 9, 9)
    same = augment({"affine": {"degrees": 0, "translate": 0.0, "scale": [1.0, 1.0]}})(x)
    assert torch.allclose(same, x, atol=1e-5)
    torch.manual_seed(0)
    assert not torch.allclose(augment({"rotation": 30})(x), x, atol=1e-3)


def test_augmentations_refuse_non_image_data(cli, write_config):
    from tests.conftest import tiny_config

    cfg = tiny_config(data={"dataset": "synthetic", "augment": ["hflip"], "shape": [10]})
    result = cli("train", write_config(cfg), "--runs-dir", "runs")
    assert result.exit_code == 2 and "augmentations need image data" in result.stderr
